"""member search indexes

Revision ID: 0006_member_search
Revises: 0005_handoff
Create Date: 2026-11-29 05:10:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0006_member_search'
down_revision = '0005_handoff'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain btree expression indexes: case-insensitive prefix search of members by name
    # and @username (a text_pattern_ops index is not used once PostgreSQL reuses a generic
    # plan for the prepared query).
    op.create_index("ix_contacts_lower_display_name", "contacts",
                    [sa.text("lower(display_name)")])
    op.create_index("ix_contact_identities_lower_username", "contact_identities",
                    [sa.text("lower(username)")])


def downgrade() -> None:
    op.drop_index("ix_contact_identities_lower_username", table_name="contact_identities")
    op.drop_index("ix_contacts_lower_display_name", table_name="contacts")
