"""The methods both clients declare from the flows."""

from __future__ import annotations

import inspect
import typing
from collections.abc import AsyncIterator, Iterator

import pytest

from airflow_provider_dashscope_batch.client import (
    AsyncDashScopeClient,
    DashScopeClient,
)
from airflow_provider_dashscope_batch.client.resources import batches, files
from airflow_provider_dashscope_batch.client.types import Batch


@pytest.mark.parametrize("face", [DashScopeClient, AsyncDashScopeClient])
def test_each_client_method_is_its_flow_with_the_client_kind_of_result(face):
    for name in ("upload_file", "create_batch", "retrieve_batch", "cancel_duplicates", "list_batches"):
        resource = files if name == "upload_file" else batches
        method, flow = getattr(face, name), getattr(resource, f"{name}_flow")
        assert method.__doc__ == flow.__doc__
        _core, *flow_parameters = inspect.signature(flow).parameters
        assert list(inspect.signature(method).parameters) == ["self", *flow_parameters]
        assert method.__qualname__ == f"{face.__name__}.{name}"
    is_async = face is AsyncDashScopeClient
    assert inspect.iscoroutinefunction(face.retrieve_batch) is is_async
    assert not inspect.iscoroutinefunction(face.list_batches)
    returns = inspect.signature(face.list_batches).return_annotation
    assert returns == ("AsyncIterator[Batch]" if is_async else "Iterator[Batch]")
    assert typing.get_type_hints(face.retrieve_batch)["return"] is Batch
    assert (
        typing.get_type_hints(face.list_batches)["return"] == (AsyncIterator if is_async else Iterator)[Batch]
    )
