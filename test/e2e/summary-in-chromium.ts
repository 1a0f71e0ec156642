/**
 * The job summary as GitHub shows it: the markdown rendered to HTML (GitHub-flavoured tables, and the raw
 * `<details>`/`<summary>` GitHub lets through), opened in headless Chromium with no network, looked at and
 * photographed.
 */
import { mkdirSync, statSync } from 'node:fs';
import path from 'node:path';
import MarkdownIt from 'markdown-it';
import { chromium } from 'playwright-core';

export interface RenderedSummary {
  /** The text of each table row's first cell (the decision badge), top to bottom. */
  decisions: string[];
  /** The suggested policy is collapsed until its summary line is clicked. */
  policyHiddenAtFirst: boolean;
  policyShownAfterClick: boolean;
  policyText: string;
  screenshot: string;
  screenshotBytes: number;
}

const STYLE = `body { font: 14px -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 24px; color: #1f2328; }
table { border-collapse: collapse; } th, td { border: 1px solid #d1d9e0; padding: 6px 13px; } tr:nth-child(2n) { background: #f6f8fa; }
code, pre { font-family: ui-monospace, monospace; background: #eff1f3; border-radius: 6px; } pre { padding: 16px; }`;

export async function renderSummaryInChromium(markdown: string, screenshot: string): Promise<RenderedSummary> {
  const html = `<!doctype html><html><head><meta charset="utf-8"><style>${STYLE}</style></head><body>${new MarkdownIt({ html: true }).render(markdown)}</body></html>`;
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.route('**/*', (route) => route.abort());
    await page.setContent(html);
    const decisions = await page.locator('table tbody tr td:first-child').allTextContents();
    const policy = page.locator('details pre');
    const policyHiddenAtFirst = !(await policy.isVisible());
    mkdirSync(path.dirname(screenshot), { recursive: true });
    await page.screenshot({ path: screenshot, fullPage: true });
    await page.click('details summary');
    const policyShownAfterClick = await policy.isVisible();
    return {
      decisions,
      policyHiddenAtFirst,
      policyShownAfterClick,
      policyText: (await policy.textContent()) ?? '',
      screenshot,
      screenshotBytes: statSync(screenshot).size,
    };
  } finally {
    await browser.close();
  }
}
