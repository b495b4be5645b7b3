"""The pages a user opens, in a real browser: headless Chromium driven by Playwright.

MLflow (`mlflow ui` on 127.0.0.1, fixtures in tests/ui/conftest.py): a GRPO and an
A²TGPO run's pages, their per-turn charts (one section per quantity, every turn in it:
`ig/mean` holds `turn_0`, `turn_1`), the same sections with both runs in the
experiment's chart view, and the figures among the artifacts. Prefect (a server with its
UI on): the `train_flow/local` deployment's run form, whose `preset` is a choice list of
every preset. Each step leaves a screenshot (the folder is printed).
"""

from __future__ import annotations

import re

import pytest

from a2tgpo.presets import PRESETS

pytestmark = pytest.mark.slow

FIGURES = ("per_turn_ig.png", "per_turn_advantages.png", "clip_ranges.png")
# A decoded image of the figure's size (matplotlib's, hundreds of pixels wide) on the page
# (the preview's source is a blob: URL of the fetched file, so it is not told by its name)
FIGURE_SHOWN = """() => Array.from(document.images).some(
    img => img.complete && img.naturalWidth >= 400 && img.getBoundingClientRect().width > 0)"""


def expect_text(page, pattern: str | re.Pattern) -> None:
    """The page shows `pattern` (as rendered text), once its scripts have drawn it."""
    from playwright.sync_api import expect

    expect(page.locator("body")).to_contain_text(pattern, use_inner_text=True, timeout=60_000)


def close_assistant(page) -> None:
    """Close MLflow's assistant side panel (open by default), so the screenshots show the
    page at its full width."""
    panel = page.get_by_text("MLflow Assistant", exact=True)
    if panel.count() and panel.first.is_visible():
        page.get_by_role("button", name="Close").first.click()


def search_charts(page, text: str) -> None:
    box = page.get_by_placeholder("Search metric charts")
    box.fill(text)
    page.wait_for_timeout(1500)  # the filter is debounced


def section(quantity: str, charts: int) -> re.Pattern:
    """The header of a chart section, e.g. `ig/mean (2)`."""
    return re.compile(rf"(^|\n){re.escape(quantity)}\s*\({charts}\)")


def test_mlflow_run_pages_show_per_turn_charts_and_figures(browser, mlflow_ui, screenshots):
    page = browser.new_page()
    for preset in ("grpo", "a2tgpo"):
        _, name = mlflow_ui.runs[preset]
        page.goto(mlflow_ui.run_page(preset))
        expect_text(page, name)
        expect_text(page, f"estimator {preset}")  # the run's description
        expect_text(page, re.compile(rf"a2tgpo\.preset\s*:\s*{preset}\b"))  # its tags
        close_assistant(page)
        if preset == "a2tgpo":
            expect_text(page, "adaptive clip on")  # the estimator's switches, resolved
        page.screenshot(path=screenshots / f"mlflow-run-{preset}.png")

        page.get_by_role("tab", name="Model metrics").click()
        expect_text(page, section("adv/abs_mean", 3))
        search_charts(page, "ig/mean")
        expect_text(page, section("ig/mean", 2))  # turns 0 and 1; the answer turn has no IG
        for k in (0, 1):
            expect_text(page, f"turn_{k}")
        page.screenshot(path=screenshots / f"mlflow-charts-{preset}-ig-mean.png")
        search_charts(page, "clip_fraction")
        expect_text(page, section("clip_fraction", 3))
        page.screenshot(path=screenshots / f"mlflow-charts-{preset}-clip-fraction.png")

        page.get_by_role("tab", name="Artifacts").click()
        expect_text(page, "figures")
        if not page.get_by_text(FIGURES[0], exact=True).is_visible():
            page.get_by_text("figures", exact=True).first.click()  # expand the folder
        for figure in FIGURES:
            page.get_by_text(figure, exact=True).first.click()
            expect_text(page, f"figures/{figure}")  # the preview's title
            page.wait_for_function(FIGURE_SHOWN)  # the PNG loaded and decoded
            page.screenshot(path=screenshots / f"mlflow-artifact-{preset}-{figure}")
    page.close()


def test_mlflow_chart_view_compares_both_runs_per_turn(browser, mlflow_ui, screenshots):
    page = browser.new_page()
    page.goto(f"{mlflow_ui.url}/#/experiments/{mlflow_ui.experiment_id}/runs?compareRunsMode=CHART")
    names = [name for _, name in mlflow_ui.runs.values()]
    for name in names:
        expect_text(page, name)
    for quantity, charts in (("ig/mean", 2), ("eps_low/mean", 3)):
        search_charts(page, quantity)
        expect_text(page, section(quantity, charts))
        # every chart of the section has both runs in its legend
        legend = page.locator("body").inner_text()
        for name in names:
            assert legend.count(name) >= 1 + charts, (quantity, name)
        page.screenshot(path=screenshots / f"mlflow-compare-{quantity.replace('/', '-')}.png")
    page.close()


def test_prefect_run_form_offers_the_presets(browser, prefect_ui, screenshots):
    page = browser.new_page()
    page.goto(f"{prefect_ui.url}/deployments/deployment/{prefect_ui.deployment_id}/run")
    expect_text(page, "preset (Optional)")
    expect_text(page, "overrides (Optional)")
    expect_text(page, "config (Optional)")
    choice = page.locator("button.p-select-button__control").first  # a select, not free text
    assert choice.inner_text().strip() == "embedded"  # the deployment's default
    page.screenshot(path=screenshots / "prefect-run-form.png")
    choice.focus()
    page.keyboard.press("ArrowDown")  # opens the choice list (as a mouse click does for users)
    for name in PRESETS:
        page.get_by_text(name, exact=True).last.wait_for(state="visible")
    lines = set(page.locator("body").inner_text().splitlines())
    assert set(PRESETS) <= {line.strip() for line in lines}
    page.screenshot(path=screenshots / "prefect-run-form-presets.png")
    page.keyboard.press("Escape")
    page.close()
