"""crm order months: per member per UTC month order count and spend (cents)

Revision ID: 0007_order_months
Revises: 0006_member_search
Create Date: 2026-11-30 03:40:00
"""
import sqlalchemy as sa
from alembic import op

revision = '0007_order_months'
down_revision = '0006_member_search'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('crm_order_months',
    sa.Column('contact_id', sa.Integer(), nullable=False),
    sa.Column('month', sa.Integer(), nullable=False),
    sa.Column('orders', sa.Integer(), nullable=False),
    sa.Column('spend_cents', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_crm_order_months_contact_id_contacts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('contact_id', 'month', name=op.f('pk_crm_order_months'))
    )
    with op.batch_alter_table('crm_order_months', schema=None) as batch_op:
        batch_op.create_index('ix_crm_order_months_month_contact_id', ['month', 'contact_id', 'spend_cents', 'orders'], unique=False)

    # Backfill from the orders already stored (month index = year * 12 + month - 1, UTC;
    # spend in whole cents, exact for Numeric(14, 2)).
    if op.get_bind().dialect.name == 'sqlite':
        month = ("CAST(substr(ordered_at, 1, 4) AS INTEGER) * 12 "
                 "+ CAST(substr(ordered_at, 6, 2) AS INTEGER) - 1")
        order = ""
    else:
        month = ("CAST(date_part('year', timezone('UTC', ordered_at)) * 12 "
                 "+ date_part('month', timezone('UTC', ordered_at)) - 1 AS INTEGER)")
        order = " ORDER BY 2, 1"  # rows in index order
        op.execute("SET LOCAL work_mem = '256MB'")  # one in-memory hash aggregate
    op.execute(
        "INSERT INTO crm_order_months (contact_id, month, orders, spend_cents) "
        f"SELECT contact_id, {month}, count(*), sum(CAST(round(amount * 100) AS BIGINT)) "
        f"FROM crm_orders GROUP BY contact_id, {month}{order}"
    )


def downgrade() -> None:
    op.drop_table('crm_order_months')
