"""Transfers of batch results to object storage."""
