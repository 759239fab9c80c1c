"""The HTML report in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium; nothing is downloaded) opens the digits
training step and a 32-layer remat plan. Skipped, saying why, where either is missing."""
import shutil
import tempfile

import pytest

from tests.report_cases import deep_remat_plan, digits_step

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install '.[report]')")
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="no Chromium: apt-get install -y chromium chromium-driver")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1500,1000")


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="ffcompile-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def open_report(browser, path):
    browser.get(f"file://{path}")
    browser.get_log("browser")  # drained here, so the caller sees only its own page's messages
    assert browser.execute_script("return typeof window.ffReportReady") == "number", "the page's script did not finish"


def console_errors(browser) -> list:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def graph_nodes(browser):
    return browser.find_elements(By.CSS_SELECTOR, "#graph g.node")


def test_digits_training_step_report(browser, tmp_path):
    lowered = digits_step()
    open_report(browser, lowered.report(tmp_path / "digits.html"))
    graph = lowered.optimized
    assert len(graph_nodes(browser)) == len(graph.nodes), "one SVG element per node"
    # Clicking a node marks exactly its operands and users, and its line in the text.
    target = next(i for i, n in enumerate(graph.nodes) if n.op.name == "matmul" and len(set(n.inputs)) == 2)
    browser.find_element(By.CSS_SELECTOR, f'#graph g.node[data-item="{target}"]').click()
    operands = {int(e.get_attribute("data-item")) for e in browser.find_elements(By.CSS_SELECTOR, "#graph g.operand")}
    users = {int(e.get_attribute("data-item")) for e in browser.find_elements(By.CSS_SELECTOR, "#graph g.user")}
    assert operands == set(graph.nodes[target].inputs)
    assert users == {i for i, n in enumerate(graph.nodes) if target in n.inputs}
    mark = browser.find_element(By.ID, "mark")
    assert mark.is_displayed() and mark.value_of_css_property("top") == f"{6 + 16 * (target + 1)}px"
    # Switching stages changes the text.
    before = browser.find_element(By.ID, "text").text
    browser.find_element(By.CSS_SELECTOR, '#stages button[data-stage="3"]').click()  # the schedule
    after = browser.find_element(By.ID, "text").text
    assert after != before and after.startswith("schedule @train_step")
    browser.find_element(By.CSS_SELECTOR, '#views button[data-view="kernels"]').click()
    schedule = lowered.schedule
    in_kernels = {i for kernel in schedule.kernels for i in kernel.body}
    alone = [i for i in range(len(graph.nodes)) if schedule.root(i) not in in_kernels]  # inputs, literals
    assert len(graph_nodes(browser)) == len(schedule.kernels) + len(alone)
    browser.save_screenshot(str(tmp_path / "digits.png"))
    assert (tmp_path / "digits.png").stat().st_size > 10_000
    assert console_errors(browser) == []


def test_deep_remat_plan_report(browser, tmp_path):
    lowered = deep_remat_plan(32)
    open_report(browser, lowered.report(tmp_path / "deep.html"))
    nodes = lowered.optimized.nodes
    assert len(graph_nodes(browser)) == len(nodes)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph g.stored")) == len(lowered.plan.stored)
    assert len(browser.find_elements(By.CSS_SELECTOR, "#graph g.copy")) == len(lowered.plan.recomputed)
    # An arena buffer links to its node in the graph.
    buffer = browser.find_element(By.CSS_SELECTOR, "svg.arena rect.buf")
    browser.execute_script("arguments[0].scrollIntoView()", buffer)
    buffer.click()
    value = int(buffer.get_attribute("data-node"))
    selected = browser.find_element(By.CSS_SELECTOR, "#graph g.sel")
    assert int(selected.get_attribute("data-item")) == value
    browser.save_screenshot(str(tmp_path / "deep.png"))
    assert (tmp_path / "deep.png").stat().st_size > 10_000
    assert console_errors(browser) == []
