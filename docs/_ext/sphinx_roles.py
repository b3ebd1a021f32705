"""A griffe extension for the API pages: cross-reference roles as inline code.

dekc's docstrings are plain text that marks names with ``literals`` and with roles such as
:class:`dekc.Family` or :data:`~dekc.expectations.CLOSED_FORM_TOLERANCE`. Markdown has no
roles, so each one becomes inline code of its target (``~`` keeps only the last component).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|data|mod|attr|exc|obj|const):`(~?)([^`]+)`")


def _code(match: re.Match) -> str:
    short, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if short else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring once its object is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_code, obj.docstring.value)
