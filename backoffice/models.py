"""The backoffice owns no table: the audit log it shows lives in audit/ (issue #14)."""
