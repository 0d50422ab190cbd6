"""merge the email, service-desk and web branches into one head

Revision ID: 0006
Revises: 0003_email, 0004_service_desk, 0005_web
Create Date: 2026-12-04
"""

revision = "0006"
down_revision = ("0003_email", "0004_service_desk", "0005_web")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
