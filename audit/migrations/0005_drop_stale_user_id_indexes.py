"""Drop two indexes of health.audit_log that no model state knows about (issue #19).

backoffice 0001 created user_id with db_index=True, which built `audit_log_user_id_a1b3392d`
and its varchar_pattern_ops twin `..._like`. When the field moved to Meta.indexes
(`audit_user_idx`, the same column) and the model to this app (audit 0001, state only), the
two were never dropped: every audit entry (one per accepted webhook) was written into three
indexes on user_id. Nothing queries user_id with LIKE, and audit_user_idx serves equality.
"""

from django.db import migrations

DROP = """
DROP INDEX IF EXISTS health.audit_log_user_id_a1b3392d_like;
DROP INDEX IF EXISTS health.audit_log_user_id_a1b3392d;
"""
# Back to what the database had before (the state never changes either way).
RESTORE = """
CREATE INDEX IF NOT EXISTS audit_log_user_id_a1b3392d ON health.audit_log (user_id);
CREATE INDEX IF NOT EXISTS audit_log_user_id_a1b3392d_like
    ON health.audit_log (user_id varchar_pattern_ops);
"""


class Migration(migrations.Migration):
    dependencies = [("audit", "0004_person_viewed")]

    operations = [migrations.RunSQL(DROP, RESTORE)]
