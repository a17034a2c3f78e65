"""Reading the lessons as a reviewer would: their markdown, the reference names they cite, and
whether any of their code re-implements a function that exists in `minigemma/`.

A lesson must *call* minigemma's feature functions, never carry a second implementation of one.
Three rules catch a second implementation, each on the lesson's syntax tree:

* **name**: a function the lesson defines (def or a lambda bound to a name) has the name of a
  minigemma function (`def rms_norm`, `softmax = lambda ...`);
* **body**: a function the lesson defines has the body of a minigemma function up to renaming:
  the two syntax trees, with every local name and constant blanked out, are at least
  `BODY_SIMILARITY` alike (difflib ratio over the tree's node sequence);
* **formula**: an expression of the lesson of at least `MIN_FORMULA_NODES` nodes equals an
  expression inside a minigemma function, again up to renaming of names and constants (a formula
  copied inline, without a def around it).

Attribute names are kept (`np.mean` stays `mean`, `w.q_proj` stays `q_proj`): they are what makes
a formula the formula it is.
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib
import inspect
import pkgutil
import re
import textwrap
from dataclasses import dataclass
from functools import cache

import minigemma

BODY_SIMILARITY = 0.8
MIN_BODY_NODES = 40  # below this a body is one call or one formula: too generic to compare whole
# (two-line "call, then return" helpers look alike); the formula rule covers what they compute
MIN_FORMULA_NODES = 14
REFERENCE_LINE = re.compile(r"^Reference:", re.M)
BACKTICKED = re.compile(r"`([A-Za-z_][\w.]*)`")


def cells(source: str) -> list[tuple[str, str]]:
    """Percent-format cells: [(kind, text)], kind "markdown" (comment marks stripped) or "code"."""
    out = []
    for chunk in re.split(r"^# %%", source, flags=re.M)[1:]:
        header, _, body = chunk.partition("\n")
        if "[markdown]" in header:
            text = "\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in body.splitlines())
            out.append(("markdown", text))
        else:
            out.append(("code", body))
    return out


def markdown(source: str) -> str:
    return "\n".join(text for kind, text in cells(source) if kind == "markdown")


def code(source: str) -> str:
    return "\n".join(text for kind, text in cells(source) if kind == "code")


def reference_names(source: str) -> list[str]:
    """The backticked names of the lesson's `Reference:` paragraph (up to its first blank line)."""
    text = markdown(source)
    match = REFERENCE_LINE.search(text)
    if match is None:
        return []
    paragraph = text[match.start() :].split("\n\n")[0]
    paragraph = paragraph.split("\nminigemma:")[0]  # the reference part, not minigemma's files
    return [name for name in BACKTICKED.findall(paragraph) if not name.endswith(".py")]


# ------------------------------------------------------------------------------------ syntax


class _Blank(ast.NodeTransformer):
    """Blank out what renaming changes: local names, argument names, constants, docstrings."""

    def visit_Name(self, node):
        return ast.copy_location(ast.Name(id="_", ctx=node.ctx), node)

    def visit_arg(self, node):
        return ast.copy_location(ast.arg(arg="_"), node)

    def visit_Constant(self, node):
        return ast.copy_location(ast.Constant(value=0), node)


def _strip_docstring(body: list[ast.stmt]) -> list[ast.stmt]:
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
        return body[1:]
    return body


def shape(node: ast.AST) -> list[str]:
    """The node sequence of a syntax tree with names and constants blanked: what survives renaming."""
    node = _Blank().visit(copy.deepcopy(node))
    return [type(n).__name__ + (f".{n.attr}" if isinstance(n, ast.Attribute) else "") for n in ast.walk(node)]


def function_body(fn: ast.FunctionDef | ast.Lambda) -> ast.AST:
    if isinstance(fn, ast.Lambda):
        return fn.body
    return ast.Module(body=_strip_docstring(fn.body), type_ignores=[])


@dataclass(frozen=True)
class Defined:
    """A function a source defines: its name and its body's blanked node sequence."""

    name: str
    where: str
    body: tuple[str, ...]
    method: bool = False  # defined in a class


def defined_functions(tree: ast.AST, where: str, nested: bool = True) -> list[Defined]:
    """Functions and named lambdas; `nested=False`: only those at module level and in classes
    (a module's API, not the little closures inside its functions)."""
    out = []
    methods = {id(n) for c in ast.walk(tree) if isinstance(c, ast.ClassDef) for n in c.body}
    for node in ast.walk(tree) if nested else _outer(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            body = tuple(shape(function_body(node)))
            out.append(Defined(node.name, f"{where}:{node.lineno}", body, method=id(node) in methods))
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Lambda):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out.append(Defined(target.id, f"{where}:{node.lineno}", tuple(shape(node.value.body))))
    return out


def _outer(tree: ast.AST):
    for node in tree.body:
        yield node
        if isinstance(node, ast.ClassDef):
            yield from node.body


COMPUTING = (ast.BinOp, ast.UnaryOp, ast.Call, ast.Compare, ast.Subscript)  # what makes an expression a formula
ARITHMETIC = (ast.BinOp, ast.UnaryOp, ast.Compare, ast.Subscript)  # ... and what a formula needs besides calls


def formulas(tree: ast.AST, where: str = "") -> dict[tuple[str, ...], str]:
    """Blanked node sequence -> where and what, of every expression with at least
    MIN_FORMULA_NODES nodes that computes something (not a tuple of names, not an f-string)."""
    out = {}
    for node in ast.walk(tree):
        if not isinstance(node, ast.expr) or isinstance(node, ast.Lambda | ast.JoinedStr):
            continue
        if not any(isinstance(n, COMPUTING) for n in ast.walk(node)):
            continue
        if not any(isinstance(n, ARITHMETIC) for n in ast.walk(node)):
            continue  # calls of calls with names blanked are plumbing (`f(g(a, b))`), not a formula
        s = tuple(shape(node))
        if len(s) >= MIN_FORMULA_NODES:
            out.setdefault(s, f"{where}:{node.lineno}: {ast.unparse(node)}")
    return out


# ------------------------------------------------------------------------------------ minigemma


@cache
def minigemma_modules() -> tuple[tuple[str, ast.Module], ...]:
    """(name, syntax tree) of every module of the minigemma package, found by importing it (the
    lessons and `__main__`, which runs the CLI, aside)."""
    out = []
    for info in pkgutil.walk_packages(minigemma.__path__, "minigemma."):
        if info.name.startswith("minigemma.lessons") or info.name.endswith("__main__"):
            continue
        out.append((info.name, ast.parse(inspect.getsource(importlib.import_module(info.name)))))
    return tuple(out)


@cache
def minigemma_functions() -> tuple[Defined, ...]:
    """Every function and method defined at the top of a minigemma module or class."""
    return tuple(f for name, tree in minigemma_modules() for f in defined_functions(tree, name, nested=False))


@cache
def minigemma_formulas() -> dict[tuple[str, ...], str]:
    """Every large enough expression inside a minigemma function."""
    out = {}
    for name, tree in minigemma_modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                out.update(formulas(node, name))
    return out


def reimplementations(source: str, where: str) -> list[str]:
    """What in `source` (a lesson) re-implements a minigemma function, one line per finding."""
    tree = ast.parse(textwrap.dedent(source))
    ours = minigemma_functions()
    names = {f.name for f in ours if not f.method}  # module-level functions: the feature functions
    found = []
    for fn in defined_functions(tree, where):
        if fn.name in names:
            owner = next(f.where for f in ours if f.name == fn.name and not f.method)
            found.append(f"{fn.where}: defines {fn.name!r}, a minigemma function ({owner})")
        for theirs in ours:
            if len(theirs.body) < MIN_BODY_NODES:
                continue
            ratio = difflib.SequenceMatcher(None, fn.body, theirs.body, autojunk=False).ratio()
            if ratio >= BODY_SIMILARITY:
                found.append(f"{fn.where}: {fn.name!r} has the body of {theirs.name!r} ({theirs.where}), similarity {ratio:.2f}")
    theirs = minigemma_formulas()
    found += [f"{mine} is minigemma's {theirs[s]}" for s, mine in formulas(tree, where).items() if s in theirs]
    return found
