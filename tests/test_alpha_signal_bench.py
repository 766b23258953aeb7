"""bench/alpha_signal.py's statistics: the t statistic against scipy's one-sample t-test, noise against signal."""
import sys

import pytest
import torch

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.alpha_signal import NULL_MEDIAN_T, alpha_gradient_table, signal_stats  # noqa: E402

stats = pytest.importorskip("scipy.stats")


def test_t_statistic_is_scipys_one_sample_t():
    torch.manual_seed(0)
    table = torch.randn(40, 7, dtype=torch.float64) + torch.linspace(-1, 1, 7, dtype=torch.float64)
    t = table.mean(0).abs() / (table.std(0) / 40 ** 0.5)
    reference = torch.from_numpy(abs(stats.ttest_1samp(table.numpy(), 0.0).statistic))
    torch.testing.assert_close(t, reference)
    assert signal_stats(table)["median_abs_t"] == pytest.approx(float(reference.median()))


def test_noise_looks_like_the_null_and_a_steady_gradient_does_not():
    torch.manual_seed(1)
    noise = torch.randn(200, 400, dtype=torch.float64)
    found = signal_stats(noise)
    assert abs(found["median_abs_t"] - NULL_MEDIAN_T) < 0.1
    assert 0.02 < found["share_t_over_1.96"] < 0.09
    # a mean of 0.5 standard deviations: t = 0.5 sqrt(200) = 7, separated after 9 / 0.5^2 = 36 steps
    steady = signal_stats(noise + 0.5)
    assert steady["median_abs_t"] > 5 and steady["share_t_over_1.96"] > 0.95
    assert steady["median_snr"] == pytest.approx(0.5, abs=0.1)
    assert steady["median_steps_to_separate"] == pytest.approx(36, rel=0.4)
    assert found["median_steps_to_separate"] > 20 * steady["median_steps_to_separate"]


def test_an_alpha_without_gradient_is_counted_apart():
    table = torch.zeros(10, 5, dtype=torch.float64)
    assert signal_stats(table) == {"batches": 10, "zero_alphas": 5, "max_abs_gradient": 0.0}
    table[:, 0] = torch.arange(10.0)
    assert signal_stats(table)["zero_alphas"] == 4


def test_gradient_table_has_one_row_per_batch_and_leaves_the_weights_alone():
    alpha, weight = torch.nn.Parameter(torch.tensor([0.3, -0.2])), torch.nn.Parameter(torch.tensor(2.0))
    batches = iter([torch.tensor(1.0), torch.tensor(3.0)])

    def loss_of(x):  # d/d alpha = weight * x * (1, 2)
        return weight * x * (alpha[0] + 2 * alpha[1])

    table = alpha_gradient_table(loss_of, batches, [alpha], [weight], 2)
    torch.testing.assert_close(table, torch.tensor([[2.0, 4.0], [6.0, 12.0]], dtype=torch.float64))
    assert weight.grad is None and weight.requires_grad
