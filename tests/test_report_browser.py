"""The HTML report in a real browser: headless Chromium (Debian's `chromium` and
`chromium-driver`, driven by selenium; nothing is downloaded) opens the digits
training step and a 32-layer remat plan. Skipped, saying why, where either is missing."""
import numpy as np
import pytest

import ffcompile as ff
from ffcompile.report import browser as chromium
from ffcompile.report import page
from tests.report_cases import deep_remat_plan, digits_step

pytestmark = pytest.mark.skipif(chromium.missing() is not None, reason=str(chromium.missing()))
if chromium.missing() is None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By


@pytest.fixture(scope="module")
def browser():
    with chromium.headless_chromium() as driver:
        yield driver


def open_report(browser, path):
    assert chromium.open_report(browser, path) > 0


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
    # Hovering shows the node's op, type and location.
    hovered = browser.find_element(By.CSS_SELECTOR, f'#graph g.node[data-item="{target}"]')
    ActionChains(browser).move_to_element(hovered).perform()
    tip = browser.find_element(By.ID, "tip")
    assert tip.is_displayed() and tip.text.startswith(f"%{target} = matmul\n{graph.nodes[target].type}\n")
    assert str(graph.nodes[target].loc) in tip.text
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
    assert chromium.console_errors(browser) == []


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
    assert chromium.console_errors(browser) == []


def test_a_profile_bar_selects_its_kernel_in_the_graph_and_the_schedule(browser, tmp_path):
    w, x = np.ones((16, 8), np.float32), np.ones((4, 16), np.float32)
    lowered = ff.compile(lambda w, x: ff.tanh(x @ w).sum()).lower(w, x)
    open_report(browser, lowered.report(tmp_path / "profiled.html", profile=lowered.profile(w, x, steps=3)))
    kernel = lowered.schedule.kernels[0]
    browser.find_element(By.CSS_SELECTOR, '.bar[data-kernel="0"] rect').click()
    assert browser.find_element(By.ID, "text").text.startswith("schedule @")
    lit = {int(e.get_attribute("data-item")) for e in browser.find_elements(By.CSS_SELECTOR, "#graph g.kern")}
    assert lit == set(kernel.body)
    assert browser.find_element(By.ID, "mark").value_of_css_property("top") == "22px"  # `kernel 0` is line 1
    assert chromium.console_errors(browser) == []


def test_console_errors_are_seen(browser, tmp_path):
    """The check the tests above rely on does fail on a page that logs an error."""
    page = tmp_path / "broken.html"
    page.write_text('<script>console.error("boom")</script><script>window.ffReportReady = 1</script>')
    open_report(browser, page)
    assert ["boom" in e["message"] for e in chromium.console_errors(browser)] == [True]


def test_a_big_graph_opens_collapsed_by_kernel(browser, tmp_path, monkeypatch):
    monkeypatch.setattr(page, "COLLAPSE_ABOVE", 50)  # the digits step's 70 nodes count as big
    lowered = digits_step()
    open_report(browser, lowered.report(tmp_path / "collapsed.html"))
    assert browser.find_element(By.CSS_SELECTOR, "#views button.on").text == "kernels"
    assert len(graph_nodes(browser)) < len(lowered.optimized.nodes)
    browser.find_element(By.CSS_SELECTOR, '#views button[data-view="nodes"]').click()
    assert len(graph_nodes(browser)) == len(lowered.optimized.nodes)
