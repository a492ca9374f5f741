from smolhub_hub.training.schedule import lr_factor, seq_len_at


def test_warmup_then_cosine_to_min():
    f = [lr_factor(s, warmup=10, total=110, min_ratio=0.1) for s in range(110)]
    assert f[0] == 0.1 and abs(f[9] - 1.0) < 1e-9
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert abs(lr_factor(110, 10, 110, 0.1) - 0.1) < 1e-9


def test_restarts_repeat_the_cosine():
    f = [lr_factor(s, warmup=0, total=100, min_ratio=0.0, restarts=1) for s in range(100)]
    assert abs(f[0] - 1) < 1e-9 and abs(f[50] - 1) < 1e-9 and f[49] < 0.01


def test_sequence_length_warmup_grows_to_full():
    lens = [seq_len_at(s, full=256, warmup_steps=100) for s in range(0, 120, 10)]
    assert lens[0] == 64 and lens[-1] == 256
    assert all(a <= b for a, b in zip(lens, lens[1:], strict=False))
    assert seq_len_at(5, 256, 0) == 256
