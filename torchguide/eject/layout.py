"""Keep the written script's lines short: a trailing comment moves above a long line, a long call
breaks after its commas, aligned under its opening bracket (as a person would write it)."""

from __future__ import annotations

import io
import textwrap
import tokenize

WIDTH = 120
OPENING = {"(": ")", "[": "]", "{": "}"}


def tidy(text: str, width: int = WIDTH) -> str:
    """`text` (whole lines of Python) with each line longer than `width` made to fit where it can."""
    return "\n".join(part for line in text.split("\n") for part in fit(line, width))


def fit(line: str, width: int) -> list[str]:
    if len(line) <= width:
        return [line]
    tokens = line_tokens(line)
    if tokens is None:
        return [line]
    indent = line[: len(line) - len(line.lstrip())]
    if line.lstrip().startswith("#"):  # a long comment of its own: wrapped
        return textwrap.wrap(line.lstrip()[1:].strip(), width, initial_indent=f"{indent}# ",
                             subsequent_indent=f"{indent}# ")
    comment = next((t for t in tokens if t.type == tokenize.COMMENT), None)
    out = []
    code = line
    if comment is not None and comment.start[1] > 0:  # a comment after code (columns of the unindented line)
        code = line[: len(indent) + comment.start[1]].rstrip()
        out.append(indent + comment.string)
        tokens = line_tokens(code) or []
    return out + wrap(code, tokens, width)


def line_tokens(line: str) -> list[tokenize.TokenInfo] | None:
    try:
        return list(tokenize.generate_tokens(io.StringIO(line.lstrip() + "\n").readline))
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return None


def wrap(code: str, tokens: list[tokenize.TokenInfo], width: int) -> list[str]:
    """Break `code` after the commas of its first bracket that holds several items."""
    if len(code) <= width:
        return [code]
    shift = len(code) - len(code.lstrip())
    depth, opened, commas = 0, None, []
    for token in tokens:
        if token.type != tokenize.OP:
            continue
        if token.string in OPENING:
            depth += 1
            if opened is None:
                opened = (token.start[1] + shift, depth)
        elif token.string in OPENING.values():
            if opened is not None and depth == opened[1]:
                if commas:
                    break
                opened, commas = None, []
            depth -= 1
        elif token.string == "," and opened is not None and depth == opened[1]:
            commas.append(token.start[1] + shift)
    if opened is None or not commas:
        return [code]
    column = opened[0] + 1
    pieces, start = [], column
    for comma in commas:
        pieces.append(code[start:comma + 1].strip())
        start = comma + 1
    pieces.append(code[start:].strip())
    lines, current = [], code[:column] + pieces[0]
    for piece in pieces[1:]:
        if len(current) + 1 + len(piece) <= width:
            current += " " + piece
        else:
            lines.append(current)
            current = " " * column + piece
    return [*lines, current]
