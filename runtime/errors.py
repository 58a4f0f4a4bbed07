"""Firelet's error hierarchy. HTTP status and AWS error code live here, once."""

from __future__ import annotations


class FireletError(Exception):
    """Base class of every error Firelet raises on purpose."""


class ConfigError(FireletError):
    """The configuration file is unusable. The message names file, function and key."""


class InvokeError(FireletError):
    """An Invoke API request that fails before the function runs.

    `code` is what boto3 sees as `Error.Code` (x-amzn-ErrorType); `message_key`
    is `message` or `Message`, as AWS spells it for that exception.
    """

    status = 500
    code = "ServiceException"
    message_key = "Message"

    def __init__(self, message: str, **extra: str) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class ResourceNotFound(InvokeError):
    status = 404
    code = "ResourceNotFoundException"
    message_key = "Message"


class InvalidRequestContent(InvokeError):
    status = 400
    code = "InvalidRequestContentException"
    message_key = "message"


class InvalidParameterValue(InvokeError):
    status = 400
    code = "InvalidParameterValueException"
    message_key = "message"


class ValidationError(InvokeError):
    status = 400
    code = "ValidationException"
    message_key = "message"


class RequestTooLarge(InvokeError):
    # AWS sends RequestEntityTooLargeException on the wire although the
    # botocore model calls it RequestTooLargeException (aws/aws-sdk#45).
    status = 413
    code = "RequestEntityTooLargeException"
    message_key = "message"


class TooManyRequests(InvokeError):
    status = 429
    code = "TooManyRequestsException"
    message_key = "message"


class UnknownOperation(InvokeError):
    status = 404
    code = "UnknownOperationException"
    message_key = "message"


class ServiceError(InvokeError):
    status = 500
    code = "ServiceException"
    message_key = "Message"
