"""StoryKimi's inference CLI: --show-routing through the same MoE interface as Mixtral's; the columns are named by
block index, so the dense first blocks are simply absent."""

from StoryKimi.config import FAMILY
from tests.helpers import show_routing_table, tiny_checkpoint


def test_show_routing_names_the_moe_blocks(tmp_path, capsys, bpe_tokenizer):
    ckpt = tiny_checkpoint(tmp_path / "run", "StoryKimi", bpe_tokenizer, n_layers=3, first_k_dense=1, top_k=2)
    header, *rows = show_routing_table(capsys, FAMILY, ckpt)
    assert header.split()[1:] == ["L1", "L2"]  # block 0 is dense
    assert rows and all(len([c for c in row.split() if c.count("+") == 1]) == 2 for row in rows)
