"""Adapters that call upstream image models; none of them knows about Flask."""
