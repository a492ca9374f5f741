"""The Gradio demo every model folder launches: prompt in, streamed story out.

It refuses to start without a real checkpoint (never random weights), binds to 127.0.0.1 unless told
otherwise, and enforces its limits on the server: the number of new tokens, the prompt's length and
the queue's size are checked here, not only in the browser.

It answers every prompt that fits the model's context: the new tokens are bounded by the room the
prompt leaves (a story is never cut by an error, and the status line says when the context filled up).
Sliding the window instead would not work for every family (SmolTransformer's positions are learned).
A prompt it cannot answer (empty, longer than the context) leaves the previous story in place and says
why in the status line.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import random
from pathlib import Path

from smolhub_hub.config import ModelFamily
from smolhub_hub.errors import ArgumentParser, UserError, exit_on_user_error
from smolhub_hub.extras import require

MAX_PROMPT_CHARS = 2000
GENERATING = "Generating: "
EXAMPLES = [
    "Once upon a time",
    "Lily found a small red ball in the garden. She",
    "The little boat was scared of the big waves, so",
    "Tom and his dog Max went to the park on a sunny day. They played with a stick and ran "
    "after the birds. Then Max saw a big puddle and",
]
CHAT_EXAMPLES = [  # for a checkpoint whose tokenizer has a chat template (an instruct model)
    "What is the capital of France?",
    "Explain what a Python list comprehension is, with an example.",
    "Write a short story about a robot who learns to paint.",
]


def room_for(model, prompt: str, wanted: int, chat: bool = False) -> tuple[int, int, str | None]:
    """(prompt tokens, new tokens to generate, problem): `wanted` bounded by what the context leaves."""
    from smolhub_hub.inference import prompt_ids

    if not prompt or not prompt.strip():
        return 0, 0, "Type a prompt first."
    if len(prompt) > MAX_PROMPT_CHARS:
        return 0, 0, f"The prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}. Shorten it."
    n_prompt = len(prompt_ids(model, prompt, chat))
    room = model.max_seq_len - n_prompt
    if room < 1:
        return n_prompt, 0, (f"The prompt is {n_prompt} tokens; this model reads at most {model.max_seq_len - 1} "
                             f"(its context is {model.max_seq_len} tokens). Shorten it.")
    return n_prompt, min(wanted, room), None


def _decoded(model, prompt: str, chat: bool) -> str:
    """What stream_text shows when EOS comes first: the prompt, or an empty answer."""
    from smolhub_hub.inference import prompt_ids, shown_text

    return shown_text(model, prompt_ids(model, prompt, chat), [], chat)


def finished_status(made: int, planned: int, wanted: int, n_prompt: int, ctx: int, seed: int) -> str:
    why = ""
    if made < planned:
        why = ": the story ended (end-of-text token)"
    elif planned < wanted:
        why = f" of the {wanted} asked: the context is full (the prompt takes {n_prompt} of {ctx} tokens)"
    return f"Generated {made} tokens{why}. Seed {seed}."


def story_events(model, cap: int, prompt, max_tokens, temperature, top_k, top_p, seed, chat: bool = False):
    """What the Generate button does: yield (story, status) as the tokens arrive. `chat`: the prompt goes through
    the tokenizer's chat template and the answer alone is shown.

    A prompt it cannot answer yields `gr.update()` for the story (the previous one stays) and the reason."""
    import gradio as gr

    from smolhub_hub.inference import stream_text

    wanted = int(min(max(int(max_tokens or 1), 1), cap))  # the slider's bound is enforced here too
    n_prompt, planned, problem = room_for(model, prompt, wanted, chat)
    if problem:
        yield gr.update(), f"⚠ {problem}"
        return
    seed = random.randrange(2**31) if seed is None or seed < 0 else int(seed)
    text, made = prompt, 0
    yield gr.update(), f"{GENERATING}0 of {planned} tokens…"  # at once: the last story's status is not this one's
    try:
        for made, text in enumerate(stream_text(model, prompt, max_length=planned, temperature=float(temperature),
                                                top_k=int(top_k) if top_k else None,
                                                top_p=float(top_p) if top_p and float(top_p) < 1.0 else None,
                                                seed=seed, chat=chat), start=1):
            yield text, f"{GENERATING}{made} of {planned} tokens…"
    except UserError as e:
        yield gr.update(), f"⚠ {e}"
        return
    if made == 1 and text == _decoded(model, prompt, chat):  # EOS came first: stream_text showed the prompt alone
        made = 0
    yield text, finished_status(made, planned, wanted, n_prompt, model.max_seq_len, seed)


def stopped_status(status: str | None):
    """The status once the Stop button cancelled a story half-way (else unchanged)."""
    if not (status or "").startswith(GENERATING):
        return status
    return f"Stopped after {status.removeprefix(GENERATING).rstrip('…')}."


def build_demo(model, title: str, max_new_tokens: int = 256, max_queue: int = 64, chat: bool | None = None):
    """`chat=None`: an instruct model (its tokenizer has a chat template) answers questions, others continue stories."""
    import gradio as gr

    from smolhub_hub.inference import uses_chat

    chat = uses_chat(model, chat)
    examples = CHAT_EXAMPLES if chat else EXAMPLES
    counts = model.param_counts()
    ctx = model.max_seq_len
    cap = max(1, min(max_new_tokens, ctx - 1))

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}\n{counts['total'] / 1e6:.1f}M parameters ({counts['active'] / 1e6:.1f}M active) · "
                    f"context {ctx} tokens · checkpoint `{model.checkpoint_path}`")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", value=examples[0], lines=3, elem_id="prompt",
                                    max_length=MAX_PROMPT_CHARS)
                max_tokens = gr.Slider(1, cap, value=min(100, cap), step=1, label="Max new tokens",
                                       info="fewer when the prompt leaves less room in the context",
                                       elem_id="max-tokens")
                temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature (0 = greedy)",
                                        elem_id="temperature")
                top_k = gr.Slider(0, 200, value=50, step=1, label="Top-k (0 = off)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (1 = off)")
                seed = gr.Number(-1, label="Seed (-1 = random; the same seed gives the same story)", precision=0,
                                 minimum=-1, elem_id="seed")
                with gr.Row():
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                gr.Examples([[e] for e in examples], inputs=[prompt], label="Examples")
            with gr.Column():
                output = gr.Textbox(label="Answer" if chat else "Story", lines=14, elem_id="output")
                status = gr.Markdown(elem_id="status")
        event = button.click(functools.partial(story_events, model, cap, chat=chat),
                             [prompt, max_tokens, temperature, top_k, top_p, seed], [output, status],
                             api_name="run", concurrency_limit=2, show_progress_on=output)
        stop.click(None, cancels=[event])
        # Also after a cancel: the status must not stay "Generating".
        event.then(stopped_status, status, status, show_progress="hidden", queue=False)
    demo.queue(max_size=max_queue)
    return demo


def default_checkpoint(family: ModelFamily) -> Path:
    """runs/<family>-quick, where the quick preset writes it: under the working directory if it is there,
    else under the repository that holds the model folder (so it is found from the root and from gradio/)."""
    run = Path("runs") / f"{family.name}-quick"
    folder = importlib.util.find_spec(family.model.partition(".")[0])  # the package that holds the model
    if run.exists() or folder is None or folder.origin is None:
        return run
    return Path(folder.origin).resolve().parents[1] / run


def build_parser(family: ModelFamily) -> argparse.ArgumentParser:
    p = ArgumentParser(prog="app.py", description=f"Gradio demo for a {family.name} checkpoint.")
    p.add_argument("--checkpoint", default=None,
                   help=f"checkpoint folder, run folder, Hub repo id or .gguf file (default: runs/{family.name}-quick, "
                        "in the working directory or else in the repository)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to your network)")
    p.add_argument("--port", type=int, default=7860, help="port to serve on")
    p.add_argument("--max-new-tokens", type=int, default=256, help="server-side cap on generated tokens")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N, mps or auto")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link")
    p.add_argument("--chat", action=argparse.BooleanOptionalAction, default=None,
                   help="answer through the tokenizer's chat template (default: when it has one); --no-chat continues "
                        "the prompt as plain text")
    return p


@exit_on_user_error
def main(family: ModelFamily, argv=None):
    from smolhub_hub.inference import load_model

    args = build_parser(family).parse_args(argv)
    if not 1 <= args.port <= 65535:
        raise UserError(f"--port {args.port} is not a TCP port; give one in 1-65535")
    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    require("gradio", "the demo")
    checkpoint = args.checkpoint or str(default_checkpoint(family))
    try:
        model = load_model(checkpoint, family=family, device=args.device)
    except UserError as e:
        raise UserError(f"{e}. Train one first: python {family.name}/trainer.py --preset quick, "
                        "then pass --checkpoint runs/<run>") from None
    demo = build_demo(model, f"{family.name} demo", args.max_new_tokens, chat=args.chat)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
