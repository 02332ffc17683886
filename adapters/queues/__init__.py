"""Queue adapters: ``LocalQueue`` (SQLite file or shared memory) and ``SqsQueue`` (Amazon SQS).

Importing this package does not import boto3: the SQS adapter builds its client lazily.
"""

from overcast.adapters.queues.local import LocalQueue
from overcast.adapters.queues.sqs import SqsQueue, create_queue

__all__ = ["LocalQueue", "SqsQueue", "create_queue"]
