import ast
import importlib.util
import json
from pathlib import Path

spec = importlib.util.spec_from_file_location("compare_reports", Path(__file__).parents[1] / "tools" / "compare_reports.py")
compare_reports = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_reports)


def _report(ms_fp32: float, ms_int8: float) -> dict:
    return {"baseline": "fp32", "machine": {"cpu": "test cpu"},
            "variants": {"fp32": {"recipe": "fp32", "bin_bytes": 4_000_000, "latency_median_ms": ms_fp32,
                                  "quality": {"niqe": 4.0}},
                         "ptq_int8": {"recipe": "PTQ int8", "bin_bytes": 1_000_000, "latency_median_ms": ms_int8,
                                      "quality": {"niqe": 5.0, "fidelity_psnr": 33.0}}}}


def test_speedups_stay_within_their_own_report(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(_report(100.0, 25.0)))
    b.write_text(json.dumps(_report(300.0, 100.0)))
    assert compare_reports.main([str(a), str(b), "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    speed = {(Path(r["report"]).name, r["variant"]): r["speedup_vs_own_fp32"] for r in table}
    assert speed[("a.json", "ptq_int8")] == 4.0 and speed[("b.json", "ptq_int8")] == 3.0
    assert compare_reports.main([str(a)]) == 0
    assert "| a.json" not in capsys.readouterr().out.splitlines()[0]


def test_not_a_report_is_refused(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert compare_reports.main([str(bad)]) == 2
    assert "not a mixq report" in capsys.readouterr().err


def test_tools_use_only_public_names_of_the_package():
    private = []
    for script in sorted((Path(__file__).parents[1] / "tools").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mixq_nncf"):
                private += [f"{script.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not private
