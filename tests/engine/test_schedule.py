"""Learning-rate schedules, stepped per iteration: CGD's multistep at 60%/80%, cosine, warm-up."""
import math

import pytest
import torch

from metric_retrieval.training.builders import build_scheduler
from metric_retrieval.training.config import resolve_config


def lrs(argv, steps_per_epoch):
    cfg = resolve_config(["--data_path", "unused", "--pretrained", "none", *argv])  # the parser defaults
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg["lr"])
    sched = build_scheduler(cfg, opt, steps_per_epoch)
    out = []
    for _ in range(cfg["num_epochs"] * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cgd_multistep_decays_after_epochs_12_and_16():
    values = lrs(["--lr", "1e-4", "--num_epochs", "20"], steps_per_epoch=3)
    per_epoch = values[::3]
    assert per_epoch[:12] == pytest.approx([1e-4] * 12)
    assert per_epoch[12:16] == pytest.approx([1e-5] * 4)
    assert per_epoch[16:] == pytest.approx([1e-6] * 4)


def test_das_milestones_in_epochs_and_gamma():
    per_epoch = lrs(["--lr", "1e-5", "--num_epochs", "6", "--milestones", "2,4", "--gamma", "0.3"], 1)
    assert per_epoch == pytest.approx([1e-5, 1e-5, 3e-6, 3e-6, 9e-7, 9e-7])


def test_cosine_with_linear_warmup():
    values = lrs(["--lr", "1.0", "--num_epochs", "4", "--scheduler", "cosine", "--warmup_epochs", "1"], 2)
    assert values[:2] == pytest.approx([0.5, 1.0 * 0.5 * (1 + math.cos(0))])
    assert values[2] == pytest.approx(1.0)
    assert values[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 6)))


def test_parameter_groups_give_gem_p_ten_times_the_lr_without_decay():
    from metric_retrieval import losses, models
    from metric_retrieval.training.builders import build_optimizer

    cfg = resolve_config(["--data_path", "unused", "--lr", "1e-3", "--weight_decay", "0.01", "--head_lr_mult", "2"])
    model = models.build_model("resnet18", "gem", 512, 0)
    criterion = losses.build_criterion([{"name": "proxy_anchor"}], num_classes=5, embedding_dim=512)
    groups = {g["name"]: g for g in build_optimizer(cfg, model, criterion).param_groups}
    assert groups["head.pool.p"]["params"] == [model.head.pool.p]
    assert groups["head.pool.p"]["lr"] == pytest.approx(2e-2) and groups["head.pool.p"]["weight_decay"] == 0
    assert groups["backbone"]["lr"] == pytest.approx(1e-3) and groups["backbone"]["weight_decay"] == 0.01
    assert "head" not in groups  # the gem head has no other trainable parameter at D = C
    total = sum(len(g["params"]) for g in groups.values())  # every trainable parameter, exactly once
    assert total == sum(1 for p in [*model.parameters(), *criterion.parameters()] if p.requires_grad)
