"""DAS: FRM counts, FIFO banks, generated rows, gradients, state round-trip, eval passthrough."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metric_retrieval.producers import DAS


def ordered_bank(das: DAS, c: int) -> list[list[float]]:
    """Bank rows of class c from oldest to newest."""
    count, ptr, q = int(das.bank_count[c]), int(das.bank_ptr[c]), das.q
    slots = list(range(count)) if count < q else [(ptr + i) % q for i in range(q)]
    return [das.bank[c, s].tolist() for s in slots]


def reference_differences(emb: torch.Tensor, labels: torch.Tensor, c: int) -> list[list[float]]:
    rows = [emb[i] for i in range(len(labels)) if int(labels[i]) == c]
    diffs = [(ra - rb) for ra in rows for rb in rows]
    return [d.tolist() for d in diffs if float(d.abs().sum()) != 0]


def test_frm_counts_top_k_signed_values():
    das = DAS(num_classes=3, embedding_dim=5, dfs_num_scale=2, num_produce=1)
    emb = torch.tensor([[5.0, -9.0, 4.0, 0.0, 1.0],   # top-2 signed: dims 0, 2 (not |-9|)
                        [0.0, 1.0, 2.0, 3.0, -1.0],   # dims 3, 2
                        [1.0, 7.0, 0.0, 6.0, 0.0]])   # dims 1, 3
    das(emb, torch.tensor([0, 0, 2]))
    expected = torch.zeros(3, 5, dtype=torch.int64)
    expected[0, [0, 2]] += 1
    expected[0, [3, 2]] += 1
    expected[2, [1, 3]] += 1
    assert torch.equal(das.frm, expected) and das.frm.dtype == torch.int64
    das(emb[:1], torch.tensor([1]))
    assert das.frm[1].tolist() == [1, 0, 1, 0, 0]


class ReferenceBank:
    """The write rule of DAS ``modules/embedding_producer.py`` ``MemoryBank.enqueue_dequeue``, transcribed:
    more than Q vectors at once: the last Q fill slots 0..Q-1 and the pointer stays; otherwise a ring write
    from the pointer, which advances (mod Q)."""

    def __init__(self, q: int, dim: int) -> None:
        self.q, self.ptr, self.slots = q, 0, [[0.0] * dim for _ in range(q)]

    def write(self, vectors: list[list[float]]) -> None:
        n = len(vectors)
        if n > self.q:
            self.slots = [list(v) for v in vectors[-self.q:]]
        elif self.ptr + n > self.q:
            head = self.q - self.ptr
            self.slots[self.ptr:] = vectors[:head]
            self.slots[:n - head] = vectors[head:]
            self.ptr = n - head
        else:
            self.slots[self.ptr:self.ptr + n] = vectors
            self.ptr += n
        self.ptr %= self.q


def test_bank_write_rule_is_the_reference_one():
    q = 4
    das = DAS(num_classes=3, embedding_dim=3, mts_num_transformation_bank=q, num_produce=1, dfs_num_scale=1)
    reference = {c: ReferenceBank(q, 3) for c in range(3)}
    g = torch.Generator().manual_seed(0)
    # class 1 brings 6 > Q differences at once in batch 3 with its pointer at 2, class 0 12 in batch 5
    batches = [torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 0, 2]), torch.tensor([1, 1, 1, 0]),
               torch.tensor([2, 0, 2, 0]), torch.tensor([0, 0, 0, 0, 1, 1]), torch.tensor([1, 1, 0, 0])]
    overflow_pointers = []
    for step, labels in enumerate(batches):
        emb = torch.randn(len(labels), 3, generator=g)
        ptr_before = das.bank_ptr.clone()
        das(emb, labels)
        for c in range(3):
            new = reference_differences(emb, labels, c)
            reference[c].write(new)
            assert int(das.bank_ptr[c]) == reference[c].ptr, (step, c)
            torch.testing.assert_close(das.bank[c], torch.tensor(reference[c].slots))
            if len(new) > q:  # the overflow case: last Q in slots 0..Q-1, pointer unmoved
                overflow_pointers.append(int(ptr_before[c]))
                assert int(das.bank_ptr[c]) == int(ptr_before[c])
                torch.testing.assert_close(das.bank[c], torch.tensor(new[-q:]))
    assert overflow_pointers == [2, 2]  # both overflows met a pointer away from slot 0 (ring and rule differ)


def test_bank_drops_zero_differences():
    das = DAS(num_classes=2, embedding_dim=3, num_produce=1, dfs_num_scale=1)
    row = torch.tensor([[1.0, 2.0, 3.0]])
    das(torch.cat([row, row, row + 1]), torch.tensor([0, 0, 0]))  # 9 ordered pairs, 5 with zero L1
    assert int(das.bank_count[0]) == 4
    das(row, torch.tensor([1]))  # a lone sample adds nothing
    assert int(das.bank_count[1]) == 0


@pytest.mark.parametrize("n", [1, 3])
def test_output_shapes_and_labels(n):
    das = DAS(num_classes=4, embedding_dim=6, num_produce=n)
    emb = F.normalize(torch.randn(5, 6), dim=1)
    labels = torch.tensor([0, 1, 1, 3, 0])
    out, out_labels = das(emb, labels)
    assert out.shape == ((1 + n) * 5, 6) and out_labels.tolist() == labels.tolist() * (1 + n)
    assert torch.equal(out[:5], emb)  # real rows first, untouched
    assert torch.allclose(out[5:].norm(dim=1), torch.ones(n * 5))  # normalize=True
    assert set(das.last_stats) == {"das_mean_dist"}
    gen = out[5:].reshape(n, 5, 6)
    assert das.last_stats["das_mean_dist"] == pytest.approx(float((gen - emb).norm(dim=2).mean()), rel=1e-5)


def test_scaled_dimensions_are_the_class_top_k():
    k, left, right = 3, 0.5, 2.0
    das = DAS(num_classes=2, embedding_dim=8, num_produce=4, dfs_num_scale=k, dfs_scale_left=left,
              dfs_scale_right=right, mts_scale=0.0, normalize=False)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):  # accumulate FRM statistics
        das(torch.randn(6, 8, generator=g).abs() + 0.1, torch.tensor([0, 0, 0, 1, 1, 1]))
    emb = torch.randn(6, 8, generator=g).abs() + 0.1
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    out, _ = das(emb, labels)
    ratio = out[6:].reshape(4, 6, 8) / emb
    for i, c in enumerate(labels.tolist()):
        counts = das.frm[c].tolist()  # the k most frequent dimensions; a tie goes to the lower dimension
        top = set(sorted(range(8), key=lambda d: (-counts[d], d))[:k])
        for d in range(8):
            r = ratio[:, i, d]
            if d in top:
                assert ((r >= left) & (r < right)).all() and not torch.allclose(r, torch.ones(4))
            else:
                assert torch.equal(r, torch.ones(4))


def test_tied_frequencies_scale_the_lowest_dimensions():
    """FRM counts tie often; the tie goes to the lower dimension, so CPU and CUDA scale the same dimensions."""
    das = DAS(num_classes=1, embedding_dim=8, num_produce=3, dfs_num_scale=2, dfs_scale_left=2.0,
              dfs_scale_right=3.0, mts_scale=0.0, normalize=False)
    das.frm[0] = torch.tensor([0, 9, 9, 9, 9, 9, 0, 0])
    emb = torch.tensor([[5.0, 1, 1, 1, 1, 1, 1, 4]])  # its own top-2 (dims 0, 7) are counted first: 1 each
    out, _ = das(emb, torch.tensor([0]))
    scaled = (out[1:] != emb).any(dim=0).nonzero().flatten().tolist()
    assert scaled == [1, 2]


def test_shift_is_lambda_times_a_bank_row_of_the_class():
    lam = 0.5
    das = DAS(num_classes=3, embedding_dim=4, num_produce=5, dfs_scale_left=1.0, dfs_scale_right=1.0,
              mts_scale=lam, normalize=False)
    emb = torch.randn(5, 4)
    labels = torch.tensor([0, 0, 1, 1, 2])  # class 2 has a single sample → empty bank → no shift
    out, _ = das(emb, labels)
    shifts = (out[5:].reshape(5, 5, 4) - emb) / lam
    for i, c in enumerate(labels.tolist()):
        bank = torch.tensor(ordered_bank(das, c)).reshape(-1, 4)
        for n in range(5):
            if c == 2:
                assert torch.equal(shifts[n, i], torch.zeros(4))
            else:
                assert torch.isclose(shifts[n, i][None], bank, atol=1e-5).all(dim=1).any()


@pytest.mark.parametrize("detach", [False, True])
def test_detach_controls_gradient_through_generated_rows(detach):
    das = DAS(num_classes=2, embedding_dim=4, detach=detach)
    emb = torch.randn(4, 4, requires_grad=True)
    out, _ = das(emb, torch.tensor([0, 0, 1, 1]))
    generated = out[4:]
    (grad,) = torch.autograd.grad((generated * torch.randn_like(generated)).sum(), emb, retain_graph=True)
    assert torch.isfinite(grad).all()
    if detach:
        assert torch.equal(grad, torch.zeros_like(grad))  # generated rows are constants w.r.t. the model
    else:
        assert grad.abs().sum() > 0
    (grad_real,) = torch.autograd.grad(out[:4].sum(), emb)  # real rows always carry gradient
    assert torch.equal(grad_real, torch.ones(4, 4))


def test_state_round_trip_including_generator():
    kw = dict(num_classes=5, embedding_dim=6, mts_num_transformation_bank=3)
    g = torch.Generator().manual_seed(2)
    batches = [(torch.randn(8, 6, generator=g), torch.randint(0, 5, (8,), generator=g)) for _ in range(4)]
    a = DAS(**kw, seed=0)
    for emb, y in batches[:2]:
        a(emb, y)
    state = a.state_dict()
    assert {"frm", "bank", "bank_ptr", "bank_count", "_extra_state"} <= set(state)
    b = DAS(**kw, seed=123)
    b.load_state_dict(state)
    for emb, y in batches[2:]:
        out_a, _ = a(emb, y)
        out_b, _ = b(emb, y)
        assert torch.equal(out_a, out_b)
    for name in ("frm", "bank", "bank_ptr", "bank_count"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    torch.save(state, buf := __import__("io").BytesIO())
    buf.seek(0)
    DAS(**kw).load_state_dict(torch.load(buf))  # loads with weights_only=True


def test_eval_mode_passthrough_and_no_state_change():
    das = DAS(num_classes=2, embedding_dim=3, dfs_num_scale=2).eval()
    emb, labels = torch.randn(4, 3), torch.tensor([0, 0, 1, 1])
    out, out_labels = das(emb, labels)
    assert out is emb and out_labels is labels
    assert das.frm.sum() == 0 and das.bank_count.sum() == 0 and das.last_stats == {}


def test_same_seed_same_numbers_and_sync_is_a_noop_without_distributed():
    emb, labels = torch.randn(6, 5), torch.tensor([0, 0, 1, 1, 2, 2])
    a, b = DAS(3, 5, seed=4), DAS(3, 5, seed=4)
    a.sync_across_ranks()
    assert torch.equal(a(emb, labels)[0], b(emb, labels)[0])
    assert not torch.equal(a(emb, labels)[0], DAS(3, 5, seed=5)(emb, labels)[0])


def test_input_errors():
    das = DAS(num_classes=2, embedding_dim=3, dfs_num_scale=2)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        das(torch.randn(2, 3), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        das(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="dfs_num_scale"):
        DAS(num_classes=2, embedding_dim=3, dfs_num_scale=4)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    emb, labels = torch.randn(12, 8), torch.randint(0, 4, (12,))
    cpu, gpu = DAS(4, 8, seed=1), DAS(4, 8, seed=1).cuda()
    for _ in range(3):
        out_cpu, _ = cpu(emb, labels)
        out_gpu, _ = gpu(emb.cuda(), labels.cuda())
        assert torch.allclose(out_cpu, out_gpu.cpu(), atol=1e-5)
