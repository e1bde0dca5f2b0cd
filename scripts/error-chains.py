#!/usr/bin/env python3
"""Finds thiserror types that print their cause AND return it from source().

An error either prints its cause or returns it as `source()`, never both:
the chain is printed once, where it is shown to a person
(`status::chain`), and a message that also carries `{source}` says every
cause twice there.  For every `#[derive(thiserror::Error)]` enum or struct
under the given source directories this reports each variant (or struct)
whose `#[error("...")]` format string, or one of its extra format
arguments, reads the field thiserror returns from `source()`: a field named
`source`, or marked `#[source]` or `#[from]`.  `#[error(transparent)]` is
fine: there the inner error *is* the error.
Exit code 1 when there is a violation.  Usage: error-chains.py SRC_DIR...
"""
import re
import sys
from pathlib import Path

# --- a small Rust lexer: just enough to find attributes, items and fields ---

IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
RAW_STR_RE = re.compile(r'b?r(#*)"')
CHAR_RE = re.compile(r"b?'(?:\\(?:x[0-9a-fA-F]{2}|u\{[0-9a-fA-F]+\}|.)|[^\\'])'")


class Tok:
    """`kind` is 'ident', 'str', 'lit', 'punct' or 'group' (with `delim`
    one of '(', '[', '{' and `items` its tokens)."""

    def __init__(self, kind, text, line, items=None, delim=None):
        self.kind, self.text, self.line = kind, text, line
        self.items, self.delim = items, delim

    def is_punct(self, p):
        return self.kind == "punct" and self.text == p

    def is_ident(self, name=None):
        return self.kind == "ident" and (name is None or self.text == name)

    def __repr__(self):
        return f"{self.kind}:{self.text!r}"


def lex(text):
    """Flat token list; comments are dropped, string literals are one
    token whose `text` is the literal's content (escapes not decoded: the
    format placeholders are all we read from them)."""
    toks, i, line, n = [], 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif text.startswith("//", i):
            while i < n and text[i] != "\n":
                i += 1
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    line += text[i] == "\n"
                    i += 1
        elif RAW_STR_RE.match(text, i):
            m = RAW_STR_RE.match(text, i)
            end = text.index('"' + m.group(1), m.end())
            body = text[m.end() : end]
            toks.append(Tok("str", body, line))
            line += body.count("\n")
            i = end + 1 + len(m.group(1))
        elif c == '"' or text.startswith('b"', i):
            j = i + (2 if c == "b" else 1)
            start = j
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            body = text[start:j]
            toks.append(Tok("str", body, line))
            line += body.count("\n")
            i = j + 1
        elif c == "'" or text.startswith("b'", i):
            m = CHAR_RE.match(text, i)
            if m:
                toks.append(Tok("lit", m.group(0), line))
                i = m.end()
            else:  # a lifetime: 'a
                m = IDENT_RE.match(text, i + 1)
                toks.append(Tok("lit", "'" + m.group(0), line))
                i = m.end()
        elif IDENT_RE.match(text, i):
            m = IDENT_RE.match(text, i)
            toks.append(Tok("ident", m.group(0), line))
            i = m.end()
        elif c.isdigit():
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            toks.append(Tok("lit", text[i:j], line))
            i = j
        else:
            toks.append(Tok("punct", c, line))
            i += 1
    return toks


def tree(toks):
    """Nests the flat tokens into groups by (), [] and {}."""
    close = {")": "(", "]": "[", "}": "{"}
    stack = [Tok("group", "", 0, [], None)]
    for t in toks:
        if t.kind == "punct" and t.text in "([{":
            stack.append(Tok("group", t.text, t.line, [], t.text))
        elif t.kind == "punct" and t.text in ")]}":
            group = stack.pop()
            assert group.delim == close[t.text], f"unbalanced {t.text} at line {t.line}"
            stack[-1].items.append(group)
        else:
            stack[-1].items.append(t)
    assert len(stack) == 1, "unclosed group"
    return stack[0].items


def split_commas(items):
    """Splits a group's tokens at top-level commas; commas between `<`
    and `>` (generic arguments in a field's type) do not split."""
    parts, cur, angle = [], [], 0
    for k, t in enumerate(items):
        prev = items[k - 1] if k else None
        if t.is_punct("<"):
            angle += 1
        elif t.is_punct(">") and not (prev and prev.kind == "punct" and prev.text in "-="):
            angle = max(0, angle - 1)
        if t.is_punct(",") and angle == 0:
            parts.append(cur)
            cur = []
        else:
            cur.append(t)
    if cur:
        parts.append(cur)
    return parts


def take_attrs(items):
    """Leading `#[...]` attributes of an item: (list of their groups, rest)."""
    attrs, k = [], 0
    while k + 1 < len(items) and items[k].is_punct("#") and items[k + 1].kind == "group":
        attrs.append(items[k + 1])
        k += 2
    return attrs, items[k:]


def attr_name(attr):
    """`error` for `#[error(..)]`, `derive` for `#[derive(..)]`."""
    return attr.items[0].text if attr.items and attr.items[0].kind == "ident" else None


def attr_args(attr):
    """The tokens inside `#[name(...)]`, or None when it has no parentheses."""
    if len(attr.items) >= 2 and attr.items[1].kind == "group" and attr.items[1].delim == "(":
        return attr.items[1].items
    return None


def skip_vis(items):
    if items and items[0].is_ident("pub"):
        items = items[1:]
        if items and items[0].kind == "group" and items[0].delim == "(":
            items = items[1:]
    return items


# --- thiserror semantics ---


def fields_of(group):
    """[(name, attr names, line)] of a `{..}` or `(..)` field group; tuple
    fields are named by their index, as in `{0}`."""
    fields = []
    for idx, part in enumerate(split_commas(group.items)):
        attrs, rest = take_attrs(part)
        rest = skip_vis(rest)
        if not rest:
            continue
        names = {attr_name(a) for a in attrs}
        if group.delim == "{":
            fields.append((rest[0].text, names, rest[0].line))
        else:
            fields.append((str(idx), names, rest[0].line))
    return fields


def source_field(fields):
    """The field thiserror returns from `source()`, if any."""
    for name, attrs, _ in fields:
        if "source" in attrs or "from" in attrs:
            return name
    for name, _, _ in fields:
        if name == "source":
            return name
    return None


PLACEHOLDER_RE = re.compile(r"\{\{|\}\}|\{([^{}:]*)(?::[^{}]*)?\}")


def prints_field(error_args, field, tuple_fields):
    """Whether an `#[error(...)]` attribute's format reads `field`: as a
    `{field}`/`{0}` placeholder, or as `.field` in an extra argument that a
    placeholder uses (`"{}", .source` or `"{x}", x = .0.kind()`)."""
    if not error_args or error_args[0].kind != "str":
        return False  # transparent, or fmt = path
    fmt = error_args[0].text
    positional, named = [], {}
    for arg in split_commas(error_args[1:]):
        if len(arg) > 2 and arg[0].kind == "ident" and arg[1].is_punct("=") and not arg[2].is_punct("="):
            named[arg[0].text] = arg[2:]  # `name = expr`
        elif arg:
            positional.append(arg)

    def reads(expr):
        # The field as thiserror binds it (`source.kind()`), or in its
        # `.source` shorthand; `.other.source` is someone else's field.
        for k, t in enumerate(expr):
            if t.kind == "group":
                if reads(t.items):
                    return True
                continue
            if t.text != field:
                continue
            prev = expr[k - 1] if k else None
            prev2 = expr[k - 2] if k > 1 else None
            if prev is not None and prev.is_punct("."):
                if prev2 is None or prev2.kind == "punct":
                    return True
            elif t.kind == "ident" and not (prev is not None and prev.is_punct(":")):
                return True
        return False

    next_pos = 0
    for m in PLACEHOLDER_RE.finditer(fmt):
        if m.group(1) is None:
            continue  # {{ or }}
        arg = m.group(1).strip()
        if arg == "":
            if next_pos < len(positional) and reads(positional[next_pos]):
                return True
            next_pos += 1
        elif arg.isdigit():
            if tuple_fields and arg in tuple_fields:
                if arg == field:
                    return True
            elif int(arg) < len(positional) and reads(positional[int(arg)]):
                return True
        elif arg in named:
            if reads(named[arg]):
                return True
        elif arg == field:
            return True
    return False


def derives_thiserror(attrs, plain_error_is_thiserror):
    for a in attrs:
        if attr_name(a) != "derive":
            continue
        args = attr_args(a) or []
        for k, t in enumerate(args):
            if t.is_ident("thiserror") and k + 3 < len(args) and args[k + 3].is_ident("Error"):
                return True
            if plain_error_is_thiserror and t.is_ident("Error") and not (k and args[k - 1].is_punct(":")):
                return True
    return False


def error_attr(attrs):
    for a in attrs:
        if attr_name(a) == "error":
            return a
    return None


def check_item(path, type_name, item_attrs, variant_name, fields_group, line, out):
    attr = error_attr(item_attrs)
    if attr is None or fields_group is None:
        return
    fields = fields_of(fields_group)
    src = source_field(fields)
    if src is None:
        return
    tuple_fields = {f[0] for f in fields} if fields_group.delim == "(" else set()
    if prints_field(attr_args(attr), src, tuple_fields):
        what = f"{type_name}::{variant_name}" if variant_name else type_name
        fmt = attr_args(attr)[0].text
        out.append(f'{path}:{line}: {what} prints its source `{src}` in "{fmt}"')


def scan_items(path, items, plain_error, out):
    """Walks every item list (the file, and `mod x { .. }` bodies)."""
    k = 0
    while k < len(items):
        t = items[k]
        if t.kind == "group" and t.delim == "{":
            scan_items(path, t.items, plain_error, out)
        if not t.is_punct("#"):
            k += 1
            continue
        attrs, rest = take_attrs(items[k:])
        consumed = len(items[k:]) - len(rest)
        rest = skip_vis(rest)
        if derives_thiserror(attrs, plain_error) and rest and rest[0].text in ("enum", "struct"):
            kind, name = rest[0].text, rest[1].text
            body = next((r for r in rest[2:] if r.kind == "group" and r.delim in "({"), None)
            if kind == "struct":
                check_item(path, name, attrs, None, body, rest[1].line, out)
            elif body is not None:
                for variant in split_commas(body.items):
                    vattrs, vrest = take_attrs(variant)
                    if not vrest:
                        continue
                    group = vrest[1] if len(vrest) > 1 and vrest[1].kind == "group" else None
                    check_item(path, name, vattrs, vrest[0].text, group, vrest[0].line, out)
        k += max(consumed, 1)


def check(src):
    out = []
    for file in sorted(Path(src).rglob("*.rs")):
        text = file.read_text()
        if "thiserror" not in text:
            continue
        plain_error = re.search(r"\buse\s+thiserror::(Error\b|\{[^}]*\bError\b)", text) is not None
        scan_items(file, tree(lex(text)), plain_error, out)
    return out


def main():
    dirs = sys.argv[1:]
    if not dirs:
        print(__doc__)
        return 2
    found = [v for d in dirs for v in check(d)]
    for v in found:
        print(v)
    if found:
        print(f"{len(found)} error type(s) print the cause they also return from source()")
        return 1
    print("no error type prints the cause it returns from source()")
    return 0


if __name__ == "__main__":
    sys.exit(main())
