import pytest
import torch

from ds2hub.model import DeepSpeech2, DeepSpeech2Config
from ds2hub.training.task import ctc_feasible, ctc_loss


def test_ctc_feasibility_counts_repeats():
    targets = torch.tensor([[1, 1, 2], [1, 2, 3], [0, 0, 0]])
    lengths = torch.tensor([3, 3, 0])
    frames = torch.tensor([3, 3, 10])
    # "aab" needs a blank between the two a's: 4 frames.
    assert ctc_feasible(targets, lengths, frames).tolist() == [False, True, False]
    assert ctc_feasible(targets, lengths, frames + 1).tolist() == [True, True, False]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_ctc_under_autocast_matches_an_fp32_forward_of_the_same_model(dtype):
    """The loss of a forward pass under autocast (half-precision logits, CTC in fp32) against the
    loss of an fp32 forward pass of the same weights on the same batch."""
    torch.manual_seed(0)
    model = DeepSpeech2(
        DeepSpeech2Config(conv_channels=(8, 8), rnn_hidden=32, rnn_layers=1), vocab_size=29
    ).eval()  # batch norm from running statistics: both passes see the same normalisation
    with torch.no_grad():  # sharp, peaky logits, as a trained model makes them
        model.output.weight.mul_(30)
    features = torch.randn(2, 161, 1500)  # 15 s of audio
    lengths = torch.tensor([1500, 1200])
    targets = torch.randint(1, 29, (2, 120))
    target_lengths = torch.tensor([120, 90])

    reference_logits, out_lengths = model(features, lengths)
    reference = ctc_loss(reference_logits, out_lengths, targets, target_lengths)
    with torch.autocast("cpu", dtype=dtype):
        logits, _ = model(features, lengths)
        assert logits.dtype == dtype
        loss = ctc_loss(logits, out_lengths, targets, target_lengths)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert reference_logits.dtype == torch.float32
    # Half precision rounds the logits (bf16 keeps 8 bits of mantissa): close, not equal.
    torch.testing.assert_close(loss, reference, rtol=0.02, atol=0.0)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_infeasible_targets_give_finite_loss():
    logits = torch.randn(1, 5, 10, requires_grad=True)
    loss = ctc_loss(logits, torch.tensor([5]), torch.randint(1, 10, (1, 20)), torch.tensor([20]))
    assert torch.isfinite(loss)
