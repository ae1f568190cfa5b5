import pytest
import torch

from ds2hub.model import DeepSpeech2, DeepSpeech2Config, get_preset
from ds2hub.model.recurrent import reverse_padded

SMALL = dict(
    conv_channels=(8, 8),
    conv_kernel_freq=(11, 5),
    conv_kernel_time=(5, 3),
    rnn_hidden=24,
    rnn_layers=2,
)
VARIANTS = {
    "bigru-bn": DeepSpeech2Config(**SMALL),
    "bilstm-no-bn": DeepSpeech2Config(**SMALL, rnn_type="lstm", batch_norm=False),
    "birnn-clipped-relu": DeepSpeech2Config(**SMALL, rnn_type="rnn"),
    "birnn-bn-on-projection": DeepSpeech2Config(
        **SMALL, rnn_type="rnn", batch_norm_placement="projection"
    ),
    "forward-gru-rowconv": DeepSpeech2Config(
        **SMALL, bidirectional=False, lookahead=4, fc_hidden=16
    ),
    "time-only-1d-conv": DeepSpeech2Config(
        conv_channels=(16, 8),
        conv_kernel_freq=(0, 0),
        conv_stride_freq=(1, 1),
        conv_kernel_time=(5, 3),
        rnn_hidden=24,
        rnn_layers=2,
    ),
    "bigram-stride4-3conv": DeepSpeech2Config(
        conv_channels=(4, 4, 8),
        conv_kernel_freq=(11, 5, 5),
        conv_kernel_time=(5, 3, 3),
        conv_stride_freq=(2, 2, 2),
        conv_stride_time=(2, 2, 1),
        rnn_hidden=16,
        rnn_layers=1,
    ),
}


def _batch(lengths, n_features=161, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), n_features, max(lengths), generator=g)
    for i, n in enumerate(lengths):
        x[i, :, n:] = 0
    return x, torch.tensor(lengths)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_output_does_not_depend_on_the_rest_of_the_batch(name):
    torch.manual_seed(0)
    model = DeepSpeech2(VARIANTS[name], vocab_size=29)
    model.train()
    for _ in range(3):  # give batch norm non-trivial running statistics
        model(*_batch([120, 77, 50], seed=1))
    model.eval()
    x, lengths = _batch([130, 61, 97])
    logits, out_lengths = model(x, lengths)
    for i, n in enumerate(lengths.tolist()):
        alone, alone_len = model(x[i : i + 1, :, :n], lengths[i : i + 1])
        assert alone_len.item() == out_lengths[i].item()
        torch.testing.assert_close(alone[0], logits[i, : out_lengths[i]], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    "name", ["bigru-bn", "birnn-clipped-relu", "birnn-bn-on-projection", "forward-gru-rowconv"]
)
def test_training_batch_norm_ignores_padding(name):
    """In training mode BN uses batch statistics, but extra padding must not change them."""
    torch.manual_seed(0)
    model = DeepSpeech2(VARIANTS[name], vocab_size=29).train()
    x, lengths = _batch([90, 60])
    padded = torch.nn.functional.pad(x, (0, 40))
    a, la = model(x, lengths)
    b, lb = model(padded, lengths)
    assert torch.equal(la, lb)
    for i in range(2):
        torch.testing.assert_close(a[i, : la[i]], b[i, : lb[i]], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_output_lengths_match_the_forward_pass(name):
    model = DeepSpeech2(VARIANTS[name], vocab_size=10).eval()
    x, lengths = _batch([101, 64, 33])
    logits, out_lengths = model(x, lengths)
    assert torch.equal(out_lengths, model.output_lengths(lengths))
    assert logits.shape == (3, int(out_lengths.max()), 10)
    stride = VARIANTS[name].time_stride
    assert torch.equal(out_lengths, (lengths + stride - 1) // stride)


def test_a_1d_conv_layer_is_a_conv1d_over_time_with_the_bins_as_channels():
    """conv_kernel_freq 0 (the paper's '1D' front end): every output sees the whole band."""
    torch.manual_seed(0)
    model = DeepSpeech2(VARIANTS["time-only-1d-conv"], vocab_size=29).eval()
    first, second = model.conv.convs
    x, _ = _batch([40])
    weight = first.weight.squeeze(1)  # (C, 1, F, k) -> (C, F, k)
    expected = torch.nn.functional.conv1d(x, weight, None, stride=2, padding=2)  # (1, C, T')
    torch.testing.assert_close(first(x.unsqueeze(1)).squeeze(2), expected)
    assert first.weight.shape[2] == 161 and second.weight.shape[2] == 1
    assert model.conv.output_size == 8  # channels x 1 frequency bin


def test_row_convolution_only_looks_ahead_lookahead_frames():
    config = VARIANTS["forward-gru-rowconv"]
    model = DeepSpeech2(config, vocab_size=29).eval()
    x, lengths = _batch([200])
    base, _ = model(x, lengths)
    changed = x.clone()
    changed[:, :, 150:] += 5.0  # perturb the future from input frame 150 on
    out, _ = model(changed, lengths)

    # The last input frame output frame t can see: row conv adds `lookahead` frames, then each
    # conv layer (kernel k, stride s), taken from the top, maps frame u to u * s + k // 2.
    def reach(t: int) -> int:
        u = t + config.lookahead
        for k, s in reversed(list(zip(config.conv_kernel_time, config.conv_stride_time))):
            u = u * s + k // 2
        return u

    first_affected = min(t for t in range(base.size(1)) if reach(t) >= 150)
    torch.testing.assert_close(
        base[0, :first_affected], out[0, :first_affected], atol=1e-6, rtol=1e-5
    )
    assert not torch.allclose(base[0, first_affected], out[0, first_affected], atol=1e-4)


def test_reverse_padded():
    x = torch.arange(8.0).view(2, 4, 1)
    out = reverse_padded(x, torch.tensor([4, 2]))
    assert out[:, :, 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7]]


def test_paper_preset_is_about_100m_parameters():
    config = get_preset("paper")
    assert len(config.conv_channels) == 3 and config.rnn_layers == 7 and config.bidirectional
    n = DeepSpeech2(config, vocab_size=29).num_parameters()
    assert 90e6 < n < 110e6
    assert get_preset("paper-bigram").time_stride == 4
    assert get_preset("paper-streaming").streaming


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            dict(
                conv_channels=(),
                conv_kernel_freq=(),
                conv_kernel_time=(),
                conv_stride_freq=(),
                conv_stride_time=(),
            ),
            "1 to 3 conv",
        ),
        (dict(rnn_layers=8), "1 to 7"),
        (dict(rnn_type="transformer"), "rnn_type"),
        (dict(lookahead=5), "forward-only"),
        (dict(conv_channels=(32,)), "one entry per conv layer"),
        (dict(conv_kernel_freq=(40, 0)), "odd sizes"),
        (dict(conv_kernel_freq=(0, 0)), "conv_stride_freq must be 1"),
        (dict(conv_kernel_time=(0, 11)), "conv_kernel_time"),
    ],
)
def test_invalid_architectures_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeepSpeech2Config(**kwargs)


def test_config_round_trips_through_json():
    config = get_preset("paper-streaming")
    assert DeepSpeech2Config.from_dict(config.to_dict()) == config


def test_batch_norm_on_the_projection_normalises_w_x_over_valid_frames():
    """The paper's placement (eq. 5): B(W x) per direction, its statistics over valid frames only;
    the layer input itself is not normalised."""
    config = DeepSpeech2Config(**SMALL, rnn_type="rnn", batch_norm_placement="projection")
    layer = DeepSpeech2(config, vocab_size=29).train().rnns[0]
    assert layer.norm is None and len(layer.rnn.projection_norms) == 2
    x = torch.randn(2, 30, layer.rnn.input_proj[0].in_features) * 5 + 3
    mask = torch.arange(30)[None, :] < torch.tensor([[30], [12]])
    x[1, 12:] = 1e4  # padding must not move the statistics
    for direction in (0, 1):
        valid = layer.rnn.project(x, direction, mask)[mask]
        torch.testing.assert_close(valid.mean(0), torch.zeros(valid.size(1)), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            valid.var(0, unbiased=False), torch.ones(valid.size(1)), atol=1e-3, rtol=0
        )


def test_the_bidirectional_layer_runs_its_recurrence_on_b_w_x_in_both_directions():
    """Eq. 5 written out: each direction's h_t = clip(B(W x_t) + U h_t-1 + b), the backward one
    over the reversed sequence, summed; the layer's forward must be exactly that."""
    torch.manual_seed(0)
    config = DeepSpeech2Config(**SMALL, rnn_type="rnn", batch_norm_placement="projection")
    rnn = DeepSpeech2(config, vocab_size=29).rnns[0].rnn
    for norm in rnn.projection_norms:  # distinct, non-trivial running statistics per direction
        norm.bn.running_mean.uniform_(-1, 1)
        norm.bn.running_var.uniform_(0.5, 2)
    rnn.eval()
    x = torch.randn(1, 20, rnn.input_proj[0].in_features)
    lengths, mask = torch.tensor([20]), torch.ones(1, 20, dtype=torch.bool)

    def direction(d: int, seq: torch.Tensor) -> torch.Tensor:
        bn = rnn.projection_norms[d].bn
        xw = bn(rnn.input_proj[d](seq)[0])  # (T, H): B(W x), eval statistics
        h, out = torch.zeros(xw.size(1)), []
        for t in range(xw.size(0)):
            h = torch.clamp(xw[t] + rnn.recurrent[d](h), 0.0, 20.0)
            out.append(h)
        return torch.stack(out)

    expected = direction(0, x) + direction(1, x.flip(1)).flip(0)
    torch.testing.assert_close(rnn(x, lengths, mask)[0], expected)


def test_batch_norm_on_the_projection_needs_the_clipped_relu_rnn():
    with pytest.raises(ValueError, match="needs rnn_type: rnn"):
        DeepSpeech2Config(**SMALL, batch_norm_placement="projection")
