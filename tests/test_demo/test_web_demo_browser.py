"""End-to-end test of ``demo/web_demo.py`` in a real browser (headless Chromium, driven by Selenium).

The demo runs as a subprocess on a free port with a tiny LAVT checkpoint written by the test; the
browser opens the page, uploads a synthetic PNG, types two expressions, clicks *Segment*, waits for the
gallery and checks what came back:

* one overlay per expression, each *equal pixel for pixel* to the render that
  :class:`~mmseg_ris.apis.RISInferencer` gives for the same image (as a BGR array) and expression in
  this process, so the upload, the RGB -> BGR conversion, the model run and the lossless PNG transfer
  of the web path are all exact;
* independently of the renderer's details: the overlay is the input enlarged by an integer factor
  (plus a caption strip below), and inside the mask it differs from the plain input (every sampled
  pixel changed, each one closer to the prediction colour than in the input);
* the table lists each expression with the mask area and score that the weights imply.

The mask must be non-empty whatever the random initialisation: the checkpoint's decode head has a zero
1x1 classifier with biases (background 0, referent 1), so the two logits are (0, 1) at every pixel, the
argmax marks the whole image as the referent, the area is H * W and the score (mean softmax of the
referent channel) is 1 / (1 + e^-1) = 0.7311 exactly.

Besides, every request the page makes must go to the demo's own server (the test machine and CI have
no internet; Gradio must not need a CDN), and a screenshot goes to the test's temporary folder.

Chromium, chromedriver, Selenium and Gradio are requirements of this test: when one is missing it
FAILS and says to run ``tools/setup_browser.sh`` / ``pip install -r requirements/demo.txt``. Set
``MMSEG_RIS_SKIP_BROWSER_TESTS=1`` to skip the tests of this file on purpose.
"""
import importlib.util
import io
import json
import math
import os
import os.path as osp
import shutil
import socket
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from mmengine.runner import save_checkpoint
from PIL import Image, ImageDraw
from tiny_configs import REPO_ROOT, start_tool, stop_tools, write_tiny_train_config

from mmseg_ris.apis import RISInferencer
from mmseg_ris.visualization.overlay import PRED_COLOR

SKIP_ENV = 'MMSEG_RIS_SKIP_BROWSER_TESTS'
CHROMIUM = os.environ.get('CHROMIUM', '/usr/bin/chromium')
CHROMEDRIVER = os.environ.get('CHROMEDRIVER', '/usr/bin/chromedriver')
SETUP_HINT = ('run `bash tools/setup_browser.sh` (Chromium and chromedriver) and '
              '`pip install -r requirements/demo.txt` (Gradio and Selenium); set '
              f'{SKIP_ENV}=1 to skip these tests on purpose')
WEB_DEMO = osp.join(REPO_ROOT, 'demo', 'web_demo.py')
# Width x height: not square and not a multiple of the model's 64x64 input, so that a mask at the
# wrong size or a transposed image would show.
IMG_W, IMG_H = 80, 56
EXPRESSIONS = ['the red circle', 'the green square left of it']
# Softmax of the referent channel for logits (0, 1): the score of every pixel, so also the mean.
EXPECTED_SCORE = 1.0 / (1.0 + math.exp(-1.0))
# The flags Chromium needs here (no sandbox as root, no GPU, and nothing that calls out to the net).
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update',
                  '--disable-sync', '--disable-dev-shm-usage', '--window-size=1280,1100')
NETWORK_SCHEMES = ('http:', 'https:', 'ws:', 'wss:', 'ftp:')
SERVER_TIMEOUT = 90
UI_TIMEOUT = 40


def _skip_if_told():
    if os.environ.get(SKIP_ENV, '') not in ('', '0'):
        pytest.skip(f'{SKIP_ENV} is set')


def _require_browser_stack():
    """Fail (never skip, unless asked to) when the browser test's requirements are missing."""
    _skip_if_told()
    missing = [path for path in (CHROMIUM, CHROMEDRIVER)
               if not (osp.isfile(path) and os.access(path, os.X_OK))]
    missing += [f'python package {name}' for name in ('selenium', 'gradio')
                if importlib.util.find_spec(name) is None]
    if missing:
        pytest.fail(f'web demo browser test: missing {", ".join(missing)}: {SETUP_HINT}',
                    pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _synthetic_image(path: str) -> np.ndarray:
    """A grey-blue PNG with a red circle and a green square; returns it as RGB."""
    img = Image.new('RGB', (IMG_W, IMG_H), (70, 90, 150))
    draw = ImageDraw.Draw(img)
    draw.ellipse((44, 10, 72, 38), fill=(220, 30, 30))
    draw.rectangle((8, 20, 30, 44), fill=(40, 180, 60))
    img.save(path)
    return np.asarray(img)


def _write_checkpoint(tmp_path):
    """A tiny LAVT config and a checkpoint whose decode head predicts the referent everywhere.

    Returns the config path, the checkpoint path and an in-process inferencer with those weights.
    """
    # The data root is never read: the demo only uses the config's model and test pipeline.
    config = write_tiny_train_config(str(tmp_path / 'tiny_lavt.py'), str(tmp_path / 'no_data'))
    inferencer = RISInferencer(config, weights=None, device='cpu')
    conv_seg = inferencer.model.decode_head.conv_seg
    with torch.no_grad():
        conv_seg.weight.zero_()
        conv_seg.bias.copy_(torch.tensor([0.0, 1.0]))
    checkpoint = str(tmp_path / 'tiny_lavt_foreground.pth')
    save_checkpoint({'state_dict': inferencer.model.state_dict(), 'meta': {}}, checkpoint)
    return config, checkpoint, inferencer


def _wait_for_server(proc, url: str, log_path: str) -> None:
    deadline = time.monotonic() + SERVER_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            with open(log_path) as f:
                pytest.fail(f'web demo exited with {proc.returncode}:\n{f.read()[-4000:]}')
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    with open(log_path) as f:
        pytest.fail(f'web demo did not answer at {url} within {SERVER_TIMEOUT} s:\n'
                    f'{f.read()[-4000:]}')


def _start_browser(tmp_path, log_path: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = tmp_path / 'chromium-profile'  # fresh: no state from earlier runs
    options.add_argument(f'--user-data-dir={profile}')
    # Chrome's DevTools network events, to list every URL the page requested.
    options.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    # Both paths given, so Selenium Manager (which would download drivers) is never asked.
    service = Service(executable_path=CHROMEDRIVER, log_output=log_path)
    return webdriver.Chrome(options=options, service=service)


def _requested_urls(driver) -> list:
    urls = []
    for entry in driver.get_log('performance'):
        message = json.loads(entry['message'])['message']
        if message.get('method') == 'Network.requestWillBeSent':
            urls.append(message['params']['request']['url'])
    return urls


def _fetch_png(url: str) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=10) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert('RGB'))


def test_web_demo_in_browser(tmp_path):
    _require_browser_stack()
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    config, checkpoint, inferencer = _write_checkpoint(tmp_path)
    image_path = str(tmp_path / 'input.png')
    image_rgb = _synthetic_image(image_path)

    port = _free_port()
    url = f'http://127.0.0.1:{port}/'
    server_log = str(tmp_path / 'web_demo.log')
    server = start_tool([sys.executable, WEB_DEMO, config, checkpoint, '--device', 'cpu',
                         '--port', port, '--host', '127.0.0.1'], server_log,
                        GRADIO_TEMP_DIR=str(tmp_path / 'gradio'), GRADIO_ANALYTICS_ENABLED='False')
    driver = None
    try:
        # While the server starts: the expected renders, from the API on the same image as BGR.
        expected = inferencer(image_rgb[..., ::-1].copy(), texts=EXPRESSIONS, return_vis=True)
        driver = _start_browser(tmp_path, str(tmp_path / 'chromedriver.log'))
        _wait_for_server(server, url, server_log)

        driver.get(url)
        wait = WebDriverWait(driver, UI_TIMEOUT)
        upload = wait.until(EC.presence_of_element_located(
            (By.CSS_SELECTOR, '#ris-image input[type=file]')))
        upload.send_keys(image_path)
        # the preview appears once the file is on the server; Segment before that would send no image
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, '#ris-image img')))
        textbox = driver.find_element(By.CSS_SELECTOR, '#ris-text textarea')
        textbox.send_keys('\n'.join(EXPRESSIONS))  # one per line
        driver.find_element(By.ID, 'ris-segment').click()

        def gallery_sources(drv):
            imgs = drv.find_elements(By.CSS_SELECTOR, '#ris-gallery img')
            srcs = [img.get_attribute('src') for img in imgs]
            srcs = list(dict.fromkeys(s for s in srcs if s and s.startswith('http')))
            return srcs if len(srcs) >= len(EXPRESSIONS) else False

        try:
            sources = wait.until(gallery_sources)
        except TimeoutException:
            driver.save_screenshot(str(tmp_path / 'web_demo_timeout.png'))
            with open(server_log) as f:
                pytest.fail(f'no overlays in the gallery after {UI_TIMEOUT} s (screenshot in '
                            f'{tmp_path}); server log:\n{f.read()[-4000:]}')
        # the table is filled by the same event; wait for its last row
        wait.until(EC.text_to_be_present_in_element((By.ID, 'ris-table'), EXPRESSIONS[-1]))
        screenshot = str(tmp_path / 'web_demo.png')
        assert driver.save_screenshot(screenshot) and osp.getsize(screenshot) > 0

        assert len(sources) == len(EXPRESSIONS), sources
        for k, (src, want) in enumerate(zip(sources, expected['visualization'])):
            got = _fetch_png(src)
            assert got.shape == want.shape, (k, got.shape, want.shape)
            assert np.array_equal(got, want), (
                f'overlay {k} differs from the inferencer render in '
                f'{int((got != want).any(-1).sum())} pixels')
            # The top of the overlay is the input enlarged by an integer factor.
            scale = got.shape[1] // IMG_W
            assert scale >= 1 and got.shape[1] == scale * IMG_W, got.shape
            assert got.shape[0] > scale * IMG_H  # + the caption strip
            # One sample from the middle of each enlarged pixel: the image at its own size.
            top = got[scale // 2:scale * IMG_H:scale, scale // 2::scale].astype(int)
            assert top.shape == image_rgb.shape
            src_img = image_rgb.astype(int)
            changed = (top != src_img).any(-1)
            assert changed.all(), f'{int((~changed).sum())} pixels of the mask left unchanged'
            # tinted: every pixel is closer to the prediction colour than it was
            tint = np.asarray(PRED_COLOR[::-1])  # BGR -> RGB
            closer = np.abs(top - tint).sum(-1) < np.abs(src_img - tint).sum(-1)
            assert closer.all(), f'{int((~closer).sum())} pixels not tinted'

        table = driver.find_element(By.ID, 'ris-table').text
        for text in EXPRESSIONS:
            assert text in table, table
        assert str(IMG_W * IMG_H) in table, table
        assert f'{EXPECTED_SCORE:.4f}' in table, table
        for pred in expected['predictions']:  # the reference run agrees with the arithmetic
            assert pred['mask'].shape == (IMG_H, IMG_W) and pred['mask'].all()
            assert pred['score'] == pytest.approx(EXPECTED_SCORE, abs=1e-6)

        # network requests only (the browser's own chrome:// pages, data: and blob: URLs are local)
        network = [u for u in _requested_urls(driver) if u.startswith(NETWORK_SCHEMES)]
        assert any(u.startswith(url) for u in network), network  # the log did record the page
        foreign = [u for u in network if not u.startswith(url)]
        assert not foreign, f'the page requested other servers (offline use breaks): {foreign}'
    finally:
        if driver is not None:
            driver.quit()
        stop_tools()
        shutil.rmtree(tmp_path / 'chromium-profile', ignore_errors=True)


def test_web_demo_helpers(tmp_path):
    """Checkpoint look-up (a missing quickstart checkpoint says what to do) and input checks."""
    _skip_if_told()
    if importlib.util.find_spec('gradio') is None:
        pytest.fail(f'python package gradio missing: {SETUP_HINT}', pytrace=False)
    spec = importlib.util.spec_from_file_location('web_demo', WEB_DEMO)
    web_demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(web_demo)
    with pytest.raises(FileNotFoundError, match='tools/quickstart.sh'):
        web_demo.find_default_checkpoint(str(tmp_path))
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_9.pth'))
    with pytest.raises(FileNotFoundError, match='iter_9.pth.*tools/quickstart.sh'):
        web_demo.find_default_checkpoint(str(tmp_path))
    (tmp_path / 'iter_9.pth').write_bytes(b'')
    assert web_demo.find_default_checkpoint(str(tmp_path)) == str(tmp_path / 'iter_9.pth')
    assert web_demo.parse_expressions(' a \n\n  b c\n') == ['a', 'b c']
    # bad input is refused before the model runs (no inferencer needed)
    with pytest.raises(ValueError, match='Upload an image'):
        web_demo.segment(None, None, 'the red circle')
    image = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(ValueError, match='at least one referring expression'):
        web_demo.segment(None, image, ' \n  \n')
    with pytest.raises(ValueError, match=r'\(H, W, 3\) uint8'):
        web_demo.segment(None, image[..., 0], 'the red circle')
