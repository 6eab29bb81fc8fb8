"""Every shipped config loads and resolves against the model it names, and the docs name only files that exist.

A config whose scope pattern, stage or override no longer matches its model would fail only when a user runs it
(minutes into a real run); here it fails in seconds. Models are built at their real shape with random weights:
resolving a plan reads module names, never weights.
"""
import dataclasses
import glob
import re
from functools import lru_cache
from pathlib import Path

import pytest

from mixq_nncf.config.files import load_config
from mixq_nncf.config.plan import resolve_plan
from mixq_nncf.config.schema import parse_config, to_dict
from mixq_nncf.models import build_generator, stage_map

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("configs/**/*.json"))
DOCS = ["README.md", "benchmarks/RESULTS.md", "configs/README.md", "research/NOTES.md",
        *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("docs/*.md"))]
# repository paths a document may name; runs/ and other run-time outputs are not checked
REPO_PATH = re.compile(r"(?<![\w./-])((?:configs|benchmarks|research|docs|tools|tests|mixq_nncf)/"
                       r"[\w./{},*-]*[\w}])")


@lru_cache(maxsize=None)
def _model(arch: str, args: tuple):
    return build_generator(arch, **dict(args))


def _variants(path: str):
    cfg = load_config(ROOT / path)
    return [(name, cfg.variant(name)) for name in cfg.variant_names()]


def test_configs_are_found():
    assert len(CONFIGS) >= 20 and "configs/demo/demo.json" in CONFIGS


@pytest.mark.parametrize("path", CONFIGS)
def test_every_shipped_config_loads(path):
    for _, variant in _variants(path):
        assert parse_config(to_dict(variant)) == variant  # JSON round trip


@pytest.mark.parametrize("path", CONFIGS)
def test_every_shipped_config_resolves_against_its_model(path):
    """Every stage names layers of the model; every scope pattern matches (resolve_plan validates them)."""
    for name, variant in _variants(path):
        if variant.compression is None:
            continue
        model = _model(variant.model.arch, tuple(sorted((variant.model.args or {}).items())))
        stages = stage_map(model)
        for stage in variant.compression.stages:
            assert stages.get(stage), f"{path} [{name}]: stage {stage!r} has no layer in this model"
        compression = dataclasses.replace(variant.compression, validate_scopes=True)
        plan = resolve_plan(model, compression)
        assert set(plan.layers) == {n for names in stages.values() for n in names}


def test_demo_link_points_at_the_demo_config():
    link = ROOT / "mixq_nncf" / "data_files" / "demo.json"
    assert link.is_symlink() and link.resolve() == (ROOT / "configs" / "demo" / "demo.json").resolve()


def _expand(path: str) -> list[str]:
    """'a_{x,y}.json' -> ['a_x.json', 'a_y.json'] (shell brace expansion, one level at a time)."""
    m = re.search(r"\{([^{}]*)\}", path)
    if not m:
        return [path]
    return [q for alt in m.group(1).split(",") for q in _expand(path[:m.start()] + alt + path[m.end():])]


@pytest.mark.parametrize("doc", DOCS)
def test_docs_name_only_existing_files(doc):
    text = (ROOT / doc).read_text(encoding="utf-8")
    missing = []
    for raw in sorted(set(REPO_PATH.findall(text))):
        for path in _expand(raw.rstrip(".")):
            if not (glob.glob(str(ROOT / path)) if "*" in path else (ROOT / path).exists()):
                missing.append(path)
    assert not missing, f"{doc} names files that do not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_doc_links_resolve(doc):
    """Relative Markdown links and images ('[x](../docs/a.md#part)') point at files that exist."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)\)", text)
    local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]
    missing = [t for t in local if t and not ((ROOT / doc).parent / t).exists()]
    assert not missing, f"{doc} links to files that do not exist: {missing}"
