"""Invoker adapters: ``InlineInvoker`` (in the calling process), ``LocalProcessInvoker`` (warm worker
processes with timeouts, like Lambda sandboxes) and ``LambdaInvoker`` (AWS Lambda's Invoke API).

Importing this package does not import boto3: the Lambda adapter builds its client lazily.
"""

from overcast.adapters.invokers._handlers import LambdaContext, resolve_handler
from overcast.adapters.invokers.aws_lambda import LambdaInvoker
from overcast.adapters.invokers.inline import InlineInvoker
from overcast.adapters.invokers.process_pool import LocalProcessInvoker

__all__ = ["InlineInvoker", "LambdaContext", "LambdaInvoker", "LocalProcessInvoker", "resolve_handler"]
