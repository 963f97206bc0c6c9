"""The criterion's terms from ``--loss/--loss_weights/--miner/--loss_option`` or a YAML term list, and the
checks of their hyper-parameters against what each loss and miner declares (:mod:`metric_retrieval.utils.options`).

A term is ``{"name": LOSS, "weight": w, "miner": MINER | {"name": MINER, OPTION: value} | absent, OPTION: value}``
(:mod:`metric_retrieval.losses.criterion`).
"""
from __future__ import annotations

from typing import Any

from metric_retrieval import losses
from metric_retrieval.losses.base import takes_miner
from metric_retrieval.utils.errors import UserError
from metric_retrieval.utils.options import options_of
from metric_retrieval.utils.parsing import parse_key_values, parse_number_list

__all__ = ["loss_terms", "term_problems"]


def loss_terms(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The criterion's terms from ``--loss/--loss_weights/--miner/--loss_option`` or a YAML list."""
    spec = cfg["loss"]
    if isinstance(spec, list):
        terms = [dict(t) for t in spec]
        for t in terms:
            if "name" not in t:
                raise UserError(f"loss term {t} has no 'name'")
    else:
        names = [n.strip() for n in str(spec).split("+") if n.strip()]
        weights = parse_number_list(cfg.get("loss_weights"), "--loss_weights", float) or [1.0] * len(names)
        if len(weights) != len(names):
            raise UserError(f"--loss_weights has {len(weights)} values for {len(names)} losses in --loss {spec}")
        terms = [{"name": n, "weight": w} for n, w in zip(names, weights)]
    miner = cfg.get("miner")  # a name or a YAML node {name: ..., OPTION: value}
    for term in terms:
        term.setdefault("weight", 1.0)
        if "miner" not in term and miner and miner != "none" and takes_miner(losses.LOSSES.get(term["name"])):
            term["miner"] = dict(miner) if isinstance(miner, dict) else miner
    for key, value in parse_key_values(cfg.get("loss_option") or [], "--loss_option").items():
        loss_name, _, hparam = key.rpartition(".")
        targets = [t for t in terms if not loss_name or losses.LOSSES.canonical(t["name"]) ==
                   losses.LOSSES.canonical(loss_name)]
        if not targets:
            raise UserError(f"--loss_option {key}: no loss named {loss_name!r} in --loss {spec}")
        for t in targets:
            t[hparam] = value
    return terms


def term_problems(cfg: dict[str, Any]) -> list[str]:
    """Loss and miner hyper-parameters of the terms that break what the loss or miner declares (type, range)."""
    problems = []
    for term in loss_terms(cfg):
        declared = {o.name: o for o in options_of(losses.LOSSES.get(term["name"]))}
        problems += [p for key, value in term.items() if key in declared
                     and (p := declared[key].problem(value, f"loss {term['name']} option {key}"))]
        miner = term.get("miner")
        if isinstance(miner, dict) and miner.get("name") in losses.MINERS:
            declared = {o.name: o for o in options_of(losses.MINERS.get(miner["name"]))}
            problems += [p for key, value in miner.items() if key in declared
                         and (p := declared[key].problem(value, f"miner {miner['name']} option {key}"))]
    return problems
