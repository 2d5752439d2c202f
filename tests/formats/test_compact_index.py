"""CompactIndex: the CSR of a mask and of its transpose, against a direct reading of the mask."""

import pytest
import torch

from sparse_tickets.formats import CompactIndex

SHAPES = [(1, 1), (7, 13), (13, 1), (1, 17), (5, 3, 3, 2)]


def _dense_transpose(index: CompactIndex, values: torch.Tensor) -> torch.Tensor:
    """W^T read through the transposed index, entry by entry (slow and obvious)."""
    out = torch.zeros(index.cols, index.rows, dtype=values.dtype)
    for k in range(index.cols):
        for j in range(index.t_row_ptr[k], index.t_row_ptr[k + 1]):
            out[k, index.t_col_idx[j]] = values[index.t_value_index[j]]
    return out


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("density", [0.0, 0.3, 1.0])
def test_index_describes_the_mask_and_its_transpose(shape, density):
    mask = torch.rand(shape) < density
    weight = torch.randn(shape) * mask
    index = CompactIndex.from_mask(mask)
    values = index.gather(weight)

    assert index.nnz == int(mask.sum()) and index.shape == shape
    assert torch.equal(values, weight[mask])
    assert torch.equal(index.to_dense(values), weight)
    assert torch.equal(index.mask(), mask)
    matrix = weight.reshape(shape[0], -1)
    assert torch.equal(_dense_transpose(index, values), matrix.t())
    for tensor in index.tensors().values():
        assert tensor.dtype == torch.int32
    assert index.row_ptr[0] == 0 and index.row_ptr[-1] == index.nnz
    # Within a row the columns are sorted (row-major order of the kept entries).
    for r in range(index.rows):
        cols = index.col_idx[index.row_ptr[r] : index.row_ptr[r + 1]]
        assert torch.equal(cols, cols.sort().values)


def test_empty_rows_and_columns_have_empty_ranges():
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1, 3] = mask[1, 0] = mask[3, 3] = True
    index = CompactIndex.from_mask(mask)
    assert index.row_ptr.tolist() == [0, 0, 2, 2, 3]
    assert index.col_idx.tolist() == [0, 3, 3]
    assert index.t_row_ptr.tolist() == [0, 1, 1, 1, 3, 3]
    assert index.t_col_idx.tolist() == [1, 1, 3]
    assert index.t_value_index.tolist() == [0, 1, 2]


def test_to_dense_is_differentiable_in_the_values():
    mask = torch.rand(6, 4) < 0.5
    index = CompactIndex.from_mask(mask)
    values = torch.randn(index.nnz, requires_grad=True)
    (index.to_dense(values) * torch.arange(24.0).reshape(6, 4)).sum().backward()
    assert torch.equal(values.grad, torch.arange(24.0).reshape(6, 4)[mask])


@pytest.mark.parametrize(
    "mask, message",
    [
        (torch.ones(3, 3), "bool mask"),
        (torch.tensor(True), "at least one dimension"),
        ([[True]], "bool mask"),
    ],
)
def test_bad_masks_are_refused_in_one_line(mask, message):
    with pytest.raises(ValueError, match=message):
        CompactIndex.from_mask(mask)


def test_values_and_weights_of_the_wrong_shape_are_refused():
    index = CompactIndex.from_mask(torch.rand(3, 4) < 0.5)
    with pytest.raises(ValueError, match=rf"expected \({index.nnz},\)"):
        index.to_dense(torch.zeros(index.nnz + 1))
    with pytest.raises(ValueError, match=r"expected the index's shape \(3, 4\)"):
        index.gather(torch.zeros(4, 3))
