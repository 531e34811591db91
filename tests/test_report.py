from bridgedepth.report import Table, image_grid, write_html
import numpy as np


def test_table_marks_best_values_and_ties():
    t = Table("t", ["model", "x δ1", "x AbsRel"], [["a", 0.5, 0.2], ["b", 0.7, 0.2], ["c", 0.7, 0.3]],
              higher_is_better={"x δ1"}, lower_is_better={"x AbsRel"})
    md = t.to_markdown().splitlines()
    assert md[2] == "| a | 0.500 | **0.200** |"
    assert md[3] == "| b | **0.700** | **0.200** |"
    assert md[4] == "| c | **0.700** | 0.300 |"
    same = Table("t", ["model", "x δ1"], [["a", 0.5], ["b", 0.5]], higher_is_better={"x δ1"})
    assert "**" not in same.to_markdown()


def test_html_and_grid(tmp_path):
    grid = image_grid([[np.zeros((10, 20, 3), np.uint8), None], [np.full((5, 5), 200, np.uint8)]], ["a", "b"], cell=16)
    assert grid.dtype == np.uint8 and grid.ndim == 3 and grid.shape[0] > 32
    t = Table("T", ["m", "v"], [["<x>", 1.0]])
    p = write_html(tmp_path / "r.html", "title", [("Section", t.to_html())])
    text = p.read_text()
    assert "&lt;x&gt;" in text and "<h2>Section</h2>" in text
