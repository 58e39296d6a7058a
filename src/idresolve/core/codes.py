"""Handle protocol numbers: response codes and opcodes (RFC 3652; docs/domain.md §5).

Unknown numbers decode safely: ``ResponseCode.of(n)`` and ``OpCode.of(n)`` never raise.
"""

from __future__ import annotations

from enum import IntEnum


class ResponseCode(IntEnum):
    RESERVED = 0
    SUCCESS = 1
    ERROR = 2
    SERVER_TOO_BUSY = 3
    PROTOCOL_ERROR = 4
    OPERATION_NOT_SUPPORTED = 5
    RECURSION_COUNT_TOO_HIGH = 6
    SERVER_BACKUP = 7
    HANDLE_NOT_FOUND = 100
    HANDLE_ALREADY_EXISTS = 101
    INVALID_HANDLE = 102
    VALUES_NOT_FOUND = 200
    VALUE_ALREADY_EXISTS = 201
    INVALID_VALUE = 202
    OUT_OF_DATE_SITE_INFO = 300
    SERVER_NOT_RESP = 301
    SERVICE_REFERRAL = 302
    PREFIX_REFERRAL = 303
    INVALID_ADMIN = 400
    INSUFFICIENT_PERMISSIONS = 401
    AUTHENTICATION_NEEDED = 402
    AUTHENTICATION_FAILED = 403
    INVALID_CREDENTIAL = 404
    AUTHEN_TIMEOUT = 405
    UNABLE_TO_AUTHENTICATE = 406
    SESSION_TIMEOUT = 500
    SESSION_FAILED = 501

    @classmethod
    def of(cls, number: int) -> ResponseCode | int:
        """The enum member for ``number``, or the bare int when it is not one we know."""
        try:
            return cls(number)
        except ValueError:
            return number


class OpCode(IntEnum):
    RESOLUTION = 1
    GET_SITEINFO = 2
    CREATE_HANDLE = 100
    DELETE_HANDLE = 101
    ADD_VALUE = 102
    REMOVE_VALUE = 103
    MODIFY_VALUE = 104
    LIST_HANDLES = 105
    LIST_PREFIXES = 106
    # idresolve extensions, outside the range RFC 3652 assigns.
    BATCH_CREATE = 150
    ALLOCATE_PREFIX = 151
    REGISTRY_SYNC = 152
    CHALLENGE_RESPONSE = 200
    VERIFY_RESPONSE = 201
    SESSION_SETUP = 400
    SESSION_TERMINATE = 401
    SESSION_EXCHANGEKEY = 402

    @classmethod
    def of(cls, number: int) -> OpCode | int:
        try:
            return cls(number)
        except ValueError:
            return number


#: HTTP status for each response code in the REST API (docs/rest-contract.md). Codes not listed map to 400.
HTTP_STATUS: dict[int, int] = {
    ResponseCode.SUCCESS: 200,
    ResponseCode.ERROR: 500,
    ResponseCode.SERVER_TOO_BUSY: 503,
    ResponseCode.PROTOCOL_ERROR: 400,
    ResponseCode.OPERATION_NOT_SUPPORTED: 400,
    ResponseCode.HANDLE_NOT_FOUND: 404,
    ResponseCode.HANDLE_ALREADY_EXISTS: 409,
    ResponseCode.INVALID_HANDLE: 400,
    ResponseCode.VALUES_NOT_FOUND: 400,
    ResponseCode.VALUE_ALREADY_EXISTS: 409,
    ResponseCode.INVALID_VALUE: 400,
    ResponseCode.SERVER_NOT_RESP: 400,
    ResponseCode.INVALID_ADMIN: 403,
    ResponseCode.INSUFFICIENT_PERMISSIONS: 403,
    ResponseCode.AUTHENTICATION_NEEDED: 401,
    ResponseCode.AUTHENTICATION_FAILED: 401,
    ResponseCode.INVALID_CREDENTIAL: 401,
    ResponseCode.RECURSION_COUNT_TOO_HIGH: 508,
}


def http_status(code: int) -> int:
    return HTTP_STATUS.get(code, 400)
