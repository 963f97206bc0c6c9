"""Independent reference implementations: plain Python loops over pairs/triplets on float lists.

Each function takes ``x`` (list of lists of floats) and ``y`` (list of ints) and follows the formula in the
loss's docstring literally, without any masking/vectorisation tricks.
"""
from __future__ import annotations

import math


def dist(x, i, j, squared=False):
    d2 = sum((a - b) ** 2 for a, b in zip(x[i], x[j], strict=True))
    return d2 if squared else math.sqrt(d2)


def dot(u, v):
    return sum(a * b for a, b in zip(u, v, strict=True))


def norm(u):
    return math.sqrt(dot(u, u))


def softplus(z):
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def log1p_sum_exp(values):
    """log(1 + Σ e^v), stable."""
    m = max([0.0, *values])
    return m + math.log(math.exp(-m) + sum(math.exp(v - m) for v in values))


def logsumexp(values):
    m = max(values)
    return m + math.log(sum(math.exp(v - m) for v in values))


def positives(y, i):
    return [j for j in range(len(y)) if j != i and y[j] == y[i]]


def negatives(y, i):
    return [j for j in range(len(y)) if y[j] != y[i]]


def all_triplets(y):
    return [(a, p, n) for a in range(len(y)) for p in positives(y, a) for n in negatives(y, a)]


def contrastive(x, y, pos_margin=0.0, neg_margin=1.0, triplets=None):
    if triplets is None:
        pos = [(i, j) for i in range(len(y)) for j in positives(y, i)]
        neg = [(i, j) for i in range(len(y)) for j in negatives(y, i)]
    else:
        pos = [(a, p) for a, p, _ in triplets]
        neg = [(a, n) for a, _, n in triplets]
    loss = 0.0
    if pos:
        loss += sum(max(dist(x, i, j) - pos_margin, 0.0) for i, j in pos) / len(pos)
    if neg:
        loss += sum(max(neg_margin - dist(x, i, j), 0.0) for i, j in neg) / len(neg)
    return loss


def triplet(x, y, margin=0.2, squared=True, triplets=None):
    triplets = all_triplets(y) if triplets is None else triplets
    if not triplets:
        return 0.0
    return sum(max(dist(x, a, p, squared) - dist(x, a, n, squared) + margin, 0.0) for a, p, n in triplets) / len(
        triplets
    )


def batch_hard_triplet(x, y, margin=0.1):
    total = 0.0
    for a in range(len(y)):
        neg = negatives(y, a)
        if not neg:
            continue
        hp = max([dist(x, a, p) for p in positives(y, a)], default=0.0)
        hn = min(dist(x, a, n) for n in neg)
        total += max(hp - hn + margin, 0.0)
    return total / len(y)


def margin(x, y, beta, alpha=0.2, nu=0.0, triplets=None):
    """RDML margin loss; beta: list indexed by class; all triplets of the batch if ``triplets`` is None."""
    triplets = all_triplets(y) if triplets is None else triplets

    def d(i, j):
        return math.sqrt(dist(x, i, j, True) + 1e-8)

    terms = [(max(d(a, p) - beta[y[a]] + alpha, 0.0), max(beta[y[a]] - d(a, n) + alpha, 0.0))
             for a, p, n in triplets]
    total = sum(pl + nl for pl, nl in terms)
    active = sum(pl > 0 or nl > 0 for pl, nl in terms)
    return total / max(active, 1) + nu * sum(beta[y[a]] for a, _, _ in triplets)


def multi_similarity(x, y, alpha=2.0, beta=40.0, base=0.5, eps=0.1):
    losses = []
    for i in range(len(y)):
        pos, neg = positives(y, i), negatives(y, i)
        if not pos or not neg:
            continue
        s = {j: dot(x[i], x[j]) for j in range(len(y))}
        min_pos = min(s[p] for p in pos)
        max_neg = max(s[n] for n in neg)
        kn = [n for n in neg if s[n] + eps > min_pos]
        kp = [p for p in pos if s[p] - eps < max_neg]
        if not kn or not kp:
            continue
        lp = math.log(1 + sum(math.exp(-alpha * (s[p] - base)) for p in kp)) / alpha
        ln = math.log(1 + sum(math.exp(beta * (s[n] - base)) for n in kn)) / beta
        losses.append(lp + ln)
    return sum(losses) / len(losses) if losses else 0.0


def lifted(x, y, neg_margin=1.0, l2=0.005):
    terms = []
    for a in range(len(y)):
        pos, neg = positives(y, a), negatives(y, a)
        if not pos or not neg:
            continue
        j = logsumexp([dist(x, a, p) for p in pos]) + logsumexp([neg_margin - dist(x, a, n) for n in neg])
        terms.append(max(j, 0.0))
    loss = sum(terms) / len(terms) if terms else 0.0
    return loss + l2 * sum(norm(v) for v in x) / len(x)


def npair(x, y, l2=0.005, divisor=1.0, pairs=None):
    x = [[v / divisor for v in row] for row in x]
    if pairs is None:
        pairs = [(a, p) for a in range(len(y)) for p in positives(y, a)]
    terms = [
        log1p_sum_exp([dot(x[a], x[n]) - dot(x[a], x[p]) for n in negatives(y, a)]) for a, p in pairs
    ]
    loss = sum(terms) / len(terms) if terms else 0.0
    return loss + l2 * sum(norm(v) for v in x) / len(x)


def proxy_nca(x, y, proxies, scale=3.0):
    total = 0.0
    for i in range(len(y)):
        xi = [scale * v / norm(x[i]) for v in x[i]]
        d2 = []
        for p in proxies:
            pc = [scale * v / norm(p) for v in p]
            d2.append(sum((a - b) ** 2 for a, b in zip(xi, pc, strict=True)))
        total += d2[y[i]] + logsumexp([-d2[c] for c in range(len(proxies)) if c != y[i]])
    return total / len(y)


def proxy_anchor(x, y, proxies, margin=0.1, alpha=32.0):
    c_count = len(proxies)
    cos = [[dot(xi, p) / (norm(xi) * norm(p)) for p in proxies] for xi in x]
    with_pos = [c for c in range(c_count) if c in y]
    pos = sum(log1p_sum_exp([-alpha * (cos[i][c] - margin) for i in range(len(y)) if y[i] == c]) for c in with_pos)
    neg = sum(log1p_sum_exp([alpha * (cos[i][c] + margin) for i in range(len(y)) if y[i] != c])
              for c in range(c_count))
    return pos / max(len(with_pos), 1) + neg / c_count


def cross_entropy(logits, target):
    return logsumexp(logits) - logits[target]


def normalized_softmax(x, y, weight, temperature=0.05):
    total = 0.0
    for i in range(len(y)):
        logits = [dot(x[i], w) / norm(w) / temperature for w in weight]
        total += cross_entropy(logits, y[i])
    return total / len(y)


def arcface(x, y, weight, m=0.5, s=16.0):
    total = 0.0
    for i in range(len(y)):
        cos = [min(max(dot(x[i], w) / (norm(x[i]) * norm(w)), -1 + 1e-7), 1 - 1e-7) for w in weight]
        theta = math.acos(cos[y[i]])
        cos[y[i]] = math.cos(theta + m) if theta <= math.pi - m else cos[y[i]] - m * math.sin(m)
        total += cross_entropy([s * c for c in cos], y[i])
    return total / len(y)


def binomial(x, y, alpha=2.0, pos_scale=2.0, margin=0.5):  # positive_rule="index" (test_binomial.py: the other)
    total = 0.0
    for i in range(len(y)):
        pos, neg = positives(y, i), negatives(y, i)
        if not pos or not neg:
            continue
        total += sum(softplus(-pos_scale * (dot(x[i], x[p]) - margin)) for p in pos) / len(pos)
        total += sum(softplus(alpha * (dot(x[i], x[n]) - margin)) for n in neg) / len(neg)
    return total / len(y)


def ls_ce(logits, y, smoothing=0.1, temperature=0.5, weights=None):
    total = 0.0
    for i in range(len(y)):
        z = [v / temperature for v in logits[i]]
        lse = logsumexp(z)
        nll = [lse - v for v in z]
        li = (1 - smoothing) * nll[y[i]] + smoothing * sum(nll) / len(nll)
        total += li * (1.0 if weights is None else weights[y[i]])
    return total / len(y)
