"""Asynchronous image requests (Prefer: respond-async): one row per job.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "image_jobs",
        sa.Column("id", sa.String(48), primary_key=True),
        sa.Column("key_name", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("completed_at", sa.Float),
        sa.Column("expires_at", sa.Float),
        sa.Column("result", sa.JSON),
        sa.Column("error", sa.JSON),
    )
    op.create_index("ix_image_jobs_key_status", "image_jobs", ["key_name", "status"])
    op.create_index("ix_image_jobs_expires", "image_jobs", ["expires_at"])


def downgrade():
    op.drop_table("image_jobs")
