from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit log"

    def ready(self) -> None:
        from audit.services import audit_record
        from core import audit_port

        audit_port.register(audit_record)
