"""Inline field errors on the SSH key form and the order form: the refused control is marked ``aria-invalid`` and
described (``aria-describedby``) by the message, which is shown right under it; the other controls are not marked."""

from __future__ import annotations

from html.parser import HTMLParser

from hostbay.testing.pytest_plugin import login


class _Elements(HTMLParser):
    """Every element's attributes by id, and the text of each element with an id (for the error paragraphs)."""

    def __init__(self, html: str):
        super().__init__()
        self.attrs: dict[str, dict] = {}
        self.text: dict[str, str] = {}
        self._open: list[str | None] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.attrs[attrs["id"]] = attrs
            self.text[attrs["id"]] = ""
        if tag not in ("input", "br", "img", "meta", "link", "hr"):
            self._open.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if self._open and tag not in ("input", "br", "img", "meta", "link", "hr"):
            self._open.pop()

    def handle_data(self, data):
        for el in self._open:
            if el:
                self.text[el] += data


def _assert_inline_error(html: str, control_id: str, error_id: str, words: str, others=()) -> None:
    page = _Elements(html)
    ctl = page.attrs[control_id]
    assert ctl.get("aria-invalid") == "true", ctl
    assert error_id in ctl.get("aria-describedby", "").split(), ctl
    assert words in page.text[error_id], page.text.get(error_id)
    assert "field-error" in page.attrs[error_id]["class"]
    for other in others:  # only the refused field is marked
        assert "aria-invalid" not in page.attrs[other], page.attrs[other]


def test_ssh_key_form_shows_the_error_next_to_the_field(client, db, make_user, ssh_key_line):
    login(client, make_user())
    resp = client.post("/panel/account/ssh-keys", data={"name": "laptop", "public_key": "hello world"})
    assert resp.status_code == 400
    _assert_inline_error(resp.get_data(as_text=True), "public_key", "public_key-error", "not an OpenSSH public key",
                         others=("key-name",))
    resp = client.post("/panel/account/ssh-keys", data={"name": "", "public_key": ssh_key_line()})
    assert resp.status_code == 400
    _assert_inline_error(resp.get_data(as_text=True), "key-name", "name-error", "Give the key a name",
                         others=("public_key",))
    page = client.get("/panel/account/ssh-keys").get_data(as_text=True)  # a fresh form has no error marks
    assert "aria-invalid" not in page and "field-error" not in page


def test_order_form_shows_the_error_next_to_the_field(client, db, make_user, make_package, make_image):
    pkg, img = make_package(), make_image(driver="fake", source="debian-12", name="Debian 12")
    login(client, make_user(balance_cents=5000))
    url = f"/panel/order/{pkg.uuid}/review"
    resp = client.post(url, data={"cycle": "monthly", "image": img.uuid, "hostname": "bad_name!"})
    assert resp.status_code == 400
    _assert_inline_error(resp.get_data(as_text=True), "hostname", "hostname-error", "A hostname consists of labels",
                         others=("image",))
    resp = client.post(url, data={"cycle": "monthly", "image": "", "hostname": "web1.example.test"})
    assert resp.status_code == 400
    _assert_inline_error(resp.get_data(as_text=True), "image", "image-error", "Choose an operating system image",
                         others=("hostname",))
    resp = client.post(url, data={"cycle": "monthly", "image": img.uuid, "hostname": "web1.example.test",
                                  "ssh_keys": ["not-my-key"]})
    assert resp.status_code == 400
    page = _Elements(resp.get_data(as_text=True))
    assert "One of the selected SSH keys" in page.text["ssh_keys-error"]
    ok = client.post(url, data={"cycle": "monthly", "image": img.uuid, "hostname": "web1.example.test"})
    assert ok.status_code == 200 and "aria-invalid" not in ok.get_data(as_text=True)
