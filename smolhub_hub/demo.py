"""The Gradio demo every model folder launches: prompt in, streamed story out.

It refuses to start without a real checkpoint (never random weights), binds to 127.0.0.1 unless told
otherwise, and enforces its limits on the server: the number of new tokens, the prompt's length and
the queue's size are checked here, not only in the browser.
"""

from __future__ import annotations

import argparse

from smolhub_hub.errors import UserError, exit_on_user_error

MAX_PROMPT_CHARS = 2000


def build_demo(model, title: str, max_new_tokens: int = 256, max_queue: int = 64):
    import gradio as gr

    from smolhub_hub.inference import stream_text

    counts = model.param_counts()
    cap = max(1, min(max_new_tokens, model.max_seq_len - 1))

    def run(prompt, max_tokens, temperature, top_k, top_p):
        if not prompt or not prompt.strip():
            raise gr.Error("Type a prompt first.")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise gr.Error(f"The prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}.")
        n = int(min(max(int(max_tokens or 1), 1), cap))  # the slider's bound is enforced here too
        try:
            yield from stream_text(model, prompt, max_length=n, temperature=float(temperature),
                                   top_k=int(top_k) if top_k else None,
                                   top_p=float(top_p) if top_p and float(top_p) < 1.0 else None)
        except UserError as e:
            raise gr.Error(str(e)) from None

    with gr.Blocks(title=title) as demo:
        gr.Markdown(f"## {title}\n{counts['total'] / 1e6:.1f}M parameters "
                    f"({counts['active'] / 1e6:.1f}M active) · checkpoint `{getattr(model, 'checkpoint_path', '')}`")
        with gr.Row():
            with gr.Column():
                prompt = gr.Textbox(label="Prompt", value="Once upon a time", lines=3, elem_id="prompt",
                                    max_length=MAX_PROMPT_CHARS)
                max_tokens = gr.Slider(1, cap, value=min(100, cap), step=1, label="Max new tokens")
                temperature = gr.Slider(0.0, 2.0, value=0.7, step=0.05, label="Temperature (0 = greedy)")
                top_k = gr.Slider(0, 200, value=50, step=1, label="Top-k (0 = off)")
                top_p = gr.Slider(0.05, 1.0, value=1.0, step=0.05, label="Top-p (1 = off)")
                button = gr.Button("Generate", variant="primary", elem_id="generate")
            output = gr.Textbox(label="Story", lines=14, elem_id="output")
        button.click(run, [prompt, max_tokens, temperature, top_k, top_p], output, concurrency_limit=2)
    demo.queue(max_size=max_queue)
    return demo


def build_parser(family: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="app.py", description=f"Gradio demo for a {family} checkpoint.")
    p.add_argument("--checkpoint", default=f"../../runs/{family}-quick",
                   help="checkpoint folder, run folder, or Hub repo id (default: the quick run)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 exposes it to your network)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--max-new-tokens", type=int, default=256, help="server-side cap on generated tokens")
    p.add_argument("--device", default="auto")
    p.add_argument("--share", action="store_true", help="create a public gradio.live link")
    return p


@exit_on_user_error
def main(family: str, argv=None):
    from smolhub_hub.inference import load_model

    args = build_parser(family).parse_args(argv)
    try:
        model = load_model(args.checkpoint, family=family, device=args.device)
    except UserError as e:
        raise UserError(f"{e}. Train one first: python {family}/trainer.py --preset quick, "
                        "then pass --checkpoint runs/<run>") from None
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the demo needs gradio: pip install gradio") from None
    demo = build_demo(model, f"{family} demo", args.max_new_tokens)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
