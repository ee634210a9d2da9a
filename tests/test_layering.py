"""The package imports only downward: nn ← models ← generation ← checkpoint ← inference ←
training ← tasks ← cli; serve stands on inference, never on training.

Every ``import`` of a transformerkit module, at module level or inside a function, is read from
the source (nothing is executed). A module may import its own package or a lower layer, a package
of its own layer only where :data:`SAME_LAYER` lists the pair, and never what :data:`FORBIDDEN`
names; the modules imported at load time must also form no cycle.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "transformerkit"

LAYERS = {
    "typed_config": 0, "memory": 0, "devices": 0, "data": 0, "commands": 0,
    "config": 1,
    "nn": 2, "backends": 2,
    "models": 3,
    "generation": 4,
    "checkpoint": 5,
    "inference": 6,
    "interop": 7, "training": 7, "explain": 7,
    "tasks": 8,
    "cli": 9, "serve": 9, "__main__": 10, "": 9,  # "": the package's own __init__, its public face
}
SAME_LAYER = {("cli", "serve"), ("nn", "backends")}
"""(importer, imported) packages of one layer that may import each other (nn's ``auto`` attention
kernel asks backends for a choice measured on this machine)."""
FORBIDDEN = {"serve": {"training", "tasks"}, "inference": {"training", "tasks"}, "explain": {"training", "tasks"}}
"""Package → packages it may not import whatever their layer: the server and the inference layer
use a model through ``inference``, never through the trainer or its tasks."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(every transformerkit module ``path`` imports, those imported at module level)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    everywhere, at_load = set(), set()
    for node in ast.walk(tree):
        names = ([node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                 else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
        names = [n for n in names if n == "transformerkit" or n.startswith("transformerkit.")]
        everywhere.update(names)
        if node in tree.body or any(node in getattr(parent, "body", []) for parent in tree.body
                                    if isinstance(parent, ast.If) and "TYPE_CHECKING" not in ast.unparse(parent.test)):
            at_load.update(names)
    return everywhere, at_load


def package(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def layer(module: str) -> int:
    return LAYERS[package(module)]


def graph() -> dict[str, tuple[set[str], set[str]]]:
    return {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_top_level_part_has_a_layer() -> None:
    parts = {path.relative_to(PACKAGE).parts[0].removesuffix(".py") for path in PACKAGE.iterdir()
             if path.suffix == ".py" or (path / "__init__.py").exists()}
    assert parts - {"__init__"} <= set(LAYERS), sorted(parts - set(LAYERS))


def test_no_module_imports_a_higher_layer() -> None:
    upward = [f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
              for module, (everywhere, _) in graph().items() for target in sorted(everywhere)
              if layer(target) > layer(module)]
    assert not upward, "\n".join(upward)


def test_packages_of_one_layer_import_each_other_only_where_listed() -> None:
    sideways = [f"{module} imports {target} (both layer {layer(module)})"
                for module, (everywhere, _) in graph().items() for target in sorted(everywhere)
                if layer(target) == layer(module) and package(target) != package(module)
                and (package(module), package(target)) not in SAME_LAYER]
    assert not sideways, "\n".join(sideways)


def test_serving_and_inference_never_import_training() -> None:
    forbidden = [f"{module} imports {target}" for module, (everywhere, _) in graph().items()
                 for target in sorted(everywhere) if package(target) in FORBIDDEN.get(package(module), set())]
    assert not forbidden, "\n".join(forbidden)


def test_module_level_imports_form_no_cycle() -> None:
    edges = {module: {t for t in at_load if t != module} for module, (_, at_load) in graph().items()}
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", "import cycle: " + " → ".join(path + [module])
        state[module] = "open"
        for target in sorted(edges.get(module, ())):
            visit(target, path + [module])
        state[module] = "done"

    for module in sorted(edges):
        visit(module, [])


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text("import os\nfrom transformerkit.tasks import load_recipe\n\ndef f():\n"
                      "    from transformerkit.cli import main\n", encoding="utf-8")
    everywhere, at_load = imports(source)
    assert everywhere == {"transformerkit.tasks", "transformerkit.cli"} and at_load == {"transformerkit.tasks"}
    assert layer("transformerkit.training.trainer") < layer("transformerkit.tasks")
    assert layer("transformerkit.inference.translation") < layer("transformerkit.training.trainer")
    assert "training" in FORBIDDEN["serve"] and "training" in FORBIDDEN["inference"]
