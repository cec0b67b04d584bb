"""Write the committed API documents: the OpenAPI file and the JSON Schemas of the DTOs.

    python manage.py export_api_docs          # rewrite docs/phase-3/api/openapi.yaml and
                                              # docs/phase-3/schemas/*.json
    python manage.py export_api_docs --check  # exit 1 when a committed file is stale

Every app's endpoints land in the one OpenAPI file, so rerun this after any API change;
tests call `stale_documents()` to keep the committed copies equal to what the code generates.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiYamlRenderer

from normalized.dtos import JSON_SCHEMAS

DOCS_DIR = Path(settings.BASE_DIR) / "docs" / "phase-3"
OPENAPI_PATH = DOCS_DIR / "api" / "openapi.yaml"
SCHEMAS_DIR = DOCS_DIR / "schemas"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def openapi_document() -> str:
    # The same generator and renderer as `manage.py spectacular` and GET /v1/schema/.
    # drf-spectacular ships no type hints.
    generator = SchemaGenerator()  # type: ignore[no-untyped-call]  # drf-spectacular is untyped
    schema = generator.get_schema(request=None, public=True)  # type: ignore[no-untyped-call]  # drf-spectacular is untyped
    rendered: bytes = OpenApiYamlRenderer().render(schema, renderer_context={})  # type: ignore[no-untyped-call]  # drf-spectacular is untyped
    return rendered.decode()


def json_schema_documents() -> dict[Path, str]:
    documents = {}
    for stem, model in JSON_SCHEMAS.items():
        schema: dict[str, Any] = {
            "$schema": JSON_SCHEMA_DIALECT,
            "$id": f"{stem}.json",
            **model.model_json_schema(mode="serialization"),
        }
        documents[SCHEMAS_DIR / f"{stem}.json"] = json.dumps(schema, indent=2) + "\n"
    return documents


def expected_documents() -> dict[Path, str]:
    return {OPENAPI_PATH: openapi_document(), **json_schema_documents()}


def stale_documents() -> list[Path]:
    """Committed documents that differ from the generated ones, or are missing."""
    return [
        path
        for path, text in expected_documents().items()
        if not path.exists() or path.read_text() != text
    ]


class Command(BaseCommand):
    help = "Write docs/phase-3/api/openapi.yaml and docs/phase-3/schemas/*.json from the code."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check",
            action="store_true",
            help="Write nothing; exit non-zero when a committed document is stale.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["check"]:
            stale = stale_documents()
            if stale:
                names = ", ".join(str(p.relative_to(settings.BASE_DIR)) for p in stale)
                raise CommandError(f"stale API documents: {names}; run export_api_docs")
            self.stdout.write("API documents are current.")
            return
        for path, text in expected_documents().items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            self.stdout.write(f"wrote {path.relative_to(settings.BASE_DIR)}")
