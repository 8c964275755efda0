"""Reading an image request of the server, the same way for every task's endpoint.

An image endpoint takes the image as the raw request body or as the multipart field `file`; its
options come as query parameters or, in a multipart request, as form fields (a form field wins).
`read_image_request` returns the bytes and the named options as given (strings or None); each
task's routes parse their own options. `parse_flag` reads a boolean option.
"""

from __future__ import annotations

from lbdeploy.errors import InputError

MULTIPART = "multipart/form-data"


def is_multipart(request) -> bool:
    """True when the request body is a multipart form."""
    return request.headers.get("content-type", "").startswith(MULTIPART)


async def read_image_request(request, fields: tuple[str, ...] = ()) -> tuple[bytes, dict]:
    """The image bytes and the options `fields` of a raw-body or multipart request.

    Raises:
        InputError: a multipart request without a file field named 'file'.
    """
    values = {name: request.query_params.get(name) for name in fields}
    if is_multipart(request):
        form = await request.form()
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise InputError("multipart requests need the image in a file field named 'file'")
        data = await upload.read()
        values.update({name: form[name] for name in fields if name in form})
    else:
        data = await request.body()
    return data, values


def parse_flag(name: str, value) -> bool:
    """A boolean option: true/false, 1/0, yes/no or empty (false).

    Raises:
        InputError: any other value.
    """
    if isinstance(value, bool) or value is None:
        return bool(value)
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0", "yes", "no", ""):
        raise InputError(f"{name} must be true or false, got {value!r}")
    return text in ("true", "1", "yes")
