import pytest

from emlib import results


def test_append_rows_writes_header_once_and_keeps_schema(tmp_path):
    path = tmp_path / "sub" / "results.csv"
    row = {c: "x" for c in results.RESTORATION_COLUMNS}
    results.append_rows(path, [row], results.RESTORATION_COLUMNS)
    results.append_rows(path, [dict(row, l1="0.5")], results.RESTORATION_COLUMNS)
    lines = path.read_text().splitlines()
    assert lines[0].split(",") == results.RESTORATION_COLUMNS
    assert len(lines) == 3
    assert [r["l1"] for r in results.read_rows(path)] == ["x", "0.5"]


def test_append_rows_rejects_rows_of_another_schema(tmp_path):
    row = {c: 1 for c in results.SEGMENTATION_COLUMNS}
    del row["dice_percent"]
    row["l1"] = 0.1
    with pytest.raises(ValueError, match="dice_percent.*l1"):
        results.append_rows(tmp_path / "r.csv", [row], results.SEGMENTATION_COLUMNS)
    assert not (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("name,expected", [("unet_4_424", "U-Net_4_424"), ("unet_2_44", "U-Net_2_44"),
                                           ("hrnet_w18_small", "HRNet"), ("hrnet_w44", "HRNet")])
def test_paper_model_name(name, expected):
    assert results.paper_model_name(name) == expected


def test_schemas_extend_the_papers_tables():
    import csv
    from pathlib import Path
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "paper"
    if not shared.exists():
        pytest.skip("../shared/paper not present")
    for name, columns in [("segmentation_dice.csv", results.SEGMENTATION_COLUMNS),
                          ("temimagenet_l1.csv", results.RESTORATION_COLUMNS)]:
        header = next(csv.reader(open(shared / name)))
        assert columns[: len(header)] == header
