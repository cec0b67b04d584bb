# Placeholder in the chain while the typed tables of issue #18 are written; its operations are
# filled in by the same change that adds the models.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("normalized", "0003_daily_read_covering_indexes")]
    operations: list[migrations.operations.base.Operation] = []
