"""Helpers shared by every gRPC speaker (node, router, client): error details, conversions."""
