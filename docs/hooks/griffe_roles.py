"""A griffe extension for the API pages (``extensions:`` of the mkdocstrings handler in
mkdocs.yml). The package's docstrings are written for Sphinx-style readers; three things in
them would show badly in Markdown, and are rewritten here before griffe parses them:

* roles (``:class:`~curation_spark.errors.InputError```, ``:func:`name```) become code spans
  (``~``: the last name only), and double-backtick literals single-backtick ones;
* in a module docstring, RST definition-list paragraphs (a term line, then its indented
  body: the ``Defaults`` / ``Persistence`` paragraphs of ``curation_spark.ml``) become a bold
  term and a paragraph;
* a prose sentence at the end of a numpy ``Parameters`` section (not a ``name : type``
  entry) moves above the section instead of being read as a parameter.
"""
from __future__ import annotations

import re
import textwrap

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|exc|obj):`(~?)([^`]+)`")
LITERAL = re.compile(r"``([^`]+)``")
SECTION = re.compile(r"^(\w[\w ]*)\n(-{3,})$", re.MULTILINE)
DEFINITION = re.compile(r"^(?P<term>\S[^\n]*)\n(?P<body>(?:(?: {4}[^\n]*)?\n)*?(?: {4}[^\n]*))(?=\n\n|\n?\Z)",
                        re.MULTILINE)


def markdown_of(text: str) -> str:
    text = ROLE.sub(lambda m: f"`{m.group(2).rsplit('.', 1)[-1] if m.group(1) else m.group(2)}`", text)
    return LITERAL.sub(r"`\1`", text)


def _definition_lists(text: str) -> str:
    """Term + indented body -> **term** + paragraph, before the first numpy section."""
    first = SECTION.search(text)
    head, tail = (text[:first.start()], text[first.start():]) if first else (text, "")
    head = DEFINITION.sub(lambda m: f"**{m.group('term').strip()}**\n\n{textwrap.dedent(m.group('body'))}", head)
    return head + tail


def _prose_out_of_parameters(text: str) -> str:
    """A trailing prose paragraph of a ``Parameters`` section (griffe's numpy parser would
    read it as one more parameter) moves up, above the section's heading."""
    sections = list(SECTION.finditer(text))
    for i, m in reversed(list(enumerate(sections))):
        if m.group(1) != "Parameters":
            continue
        end = sections[i + 1].start() if i + 1 < len(sections) else len(text)
        paragraphs = text[m.end():end].strip("\n").split("\n\n")
        last = paragraphs[-1].strip()
        if len(paragraphs) > 1 and "\n" not in last and " : " not in last and last.endswith("."):
            body = "\n" + "\n\n".join(paragraphs[:-1]) + "\n\n"
            text = text[:m.start()] + last + "\n\n" + text[m.start():m.end()] + body + text[end:]
    return text


class SphinxRoles(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is None:
            return
        text = markdown_of(obj.docstring.value)
        if obj.is_module:
            text = _definition_lists(text)
        obj.docstring.value = _prose_out_of_parameters(text)
