"""Handing conversations to human advisors: triggers, routing, the two advisor workspaces'
shared service, CSAT and performance reports."""
