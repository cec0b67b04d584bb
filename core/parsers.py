"""The REST API's JSON parser: DRF's, with a body nested too deeply answered as malformed.

Python's json module recurses once per nesting level, so a body such as ten thousand `[`
raises RecursionError, which DRF's JSONParser does not catch (it turns only ValueError into
ParseError): the request became a 500. Here it is the 400 `malformed_body` that any other
unparseable body gets (core/errors.py), and nothing is done with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(
        self,
        stream: IO[Any],
        media_type: str | None = None,
        parser_context: Mapping[str, Any] | None = None,
    ) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
