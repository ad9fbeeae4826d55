"""Debian's chromium, headless, driven by Selenium through Debian's chromedriver (nothing is
downloaded: both paths are given). The page's certificate is pinned by its public key
(``--ignore-certificate-errors-spki-list``), so the browser still refuses any other one."""

from __future__ import annotations

import base64
import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# a 360-pixel-wide phone's viewport (CSS pixels)
PHONE = {"width": 360, "height": 740, "deviceScaleFactor": 2, "mobile": False}


def available() -> str | None:
    """Why the browser cannot run here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not Path(path).exists():
            return f"{path} missing (make deps installs chromium and chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (the dev extra)"
    return None


def spki_pin(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER,
                                          serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


class Browser:
    """One headless chromium with a fresh profile and a download folder."""

    def __init__(self, cert_pem: bytes | None, *, width: int = 1000, height: int = 1400
                 ) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = Path(tempfile.mkdtemp(prefix="edgegw-chromium-"))
        self.downloads = self.profile / "downloads"
        self.downloads.mkdir()
        opts = webdriver.ChromeOptions()
        opts.binary_location = CHROMIUM
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", f"--user-data-dir={self.profile / 'user'}",
                    f"--window-size={width},{height}"):
            opts.add_argument(arg)
        if cert_pem is not None:            # the page's certificate, pinned by its key
            opts.add_argument(f"--ignore-certificate-errors-spki-list={spki_pin(cert_pem)}")
        opts.add_experimental_option("prefs", {
            "download.default_directory": str(self.downloads),
            "download.prompt_for_download": False})
        self.driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER),
                                       options=opts)
        self.driver.set_page_load_timeout(20)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {
            "behavior": "allow", "downloadPath": str(self.downloads)})

    def phone(self, on: bool = True) -> None:
        if on:
            self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
        else:
            self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    def run(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
