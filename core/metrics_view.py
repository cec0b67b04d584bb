"""/metrics for Prometheus. Bound to internal networks by the deployment, like /readyz.

Every scrape builds its registry afresh: the processes' metrics (all of them, through the
multiprocess folder, when there is one: core/metrics.py) and the stores' values, read now
(core/scrape_metrics.py). The format follows the Accept header: Prometheus asks for
OpenMetrics, where a counter's family keeps its own name (`provider_rate_limit_hits`) and its
sample ends in `_total`; a plain client gets the classic text format.
"""

from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client.exposition import choose_encoder

from core.metrics import process_registry
from core.scrape_metrics import StoreCollector


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    registry = process_registry()
    registry.register(StoreCollector())
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encode(registry), content_type=content_type)
