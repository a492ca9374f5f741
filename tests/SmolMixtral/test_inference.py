"""SmolMixtral's inference CLI: --show-routing lists each generated token's experts, one column per MoE layer."""

import pytest

from smolhub_hub import inference
from smolhub_hub.errors import UserError
from SmolMixtral.config import FAMILY
from tests.helpers import show_routing_table, tiny_checkpoint


def test_show_routing_lists_top_k_experts_per_layer(tmp_path, capsys, bpe_tokenizer):
    ckpt = tiny_checkpoint(tmp_path / "run", "SmolMixtral", bpe_tokenizer, n_layers=2, top_k=2)
    header, *rows = show_routing_table(capsys, FAMILY, ckpt)
    assert header.split()[1:] == ["L0", "L1"]
    assert 1 <= len(rows) <= 6
    assert all(len([c for c in row.split() if c.startswith("e") and c.count("+") == 1]) == 2 for row in rows)


def test_show_routing_is_a_flag_of_the_moe_families_only():
    from StoryLlama.config import FAMILY as LLAMA

    assert "--show-routing" in inference.build_parser(FAMILY, show_routing=True).format_help()
    with pytest.raises(UserError, match="unrecognized arguments: --show-routing"):
        inference.build_parser(LLAMA).parse_args(["--checkpoint", "x", "--prompt", "y", "--show-routing"])
