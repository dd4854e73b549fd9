// The dashboard in a real browser: headless Chromium (Debian's `chromium`, driven by
// puppeteer-core) opens the page of a running `zeromesh up --dashboard`, sees the loss curve
// gain points without a reload, and sees the recovery of a killed rank appear in the timeline.
// Screenshots go to $ZEROMESH_SCREENSHOTS (default: a temp dir; the README's come from here).
import test from 'ava'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'

const CHROMIUM = [process.env['CHROME_PATH'], '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find(
  (p): p is string => p !== undefined && p !== '' && existsSync(p)
)
const bin = fileURLToPath(new URL('../../bin/zeromesh.js', import.meta.url))
const shots = process.env['ZEROMESH_SCREENSHOTS'] ?? mkdtempSync(join(tmpdir(), 'zeromesh-dashboard-'))

const title = 'a browser watches a run on the dashboard: the loss curve grows live, and a killed rank shows up as lost and recovered in the timeline'
if (CHROMIUM === undefined && process.env['CI'] !== undefined) {
  // CI installs Chromium (.ci/run): there, a missing browser is a failure, not a skip.
  test(title, t => t.fail("no Chromium: .ci/run installs Debian's chromium; set CHROME_PATH if it lives elsewhere"))
} else if (CHROMIUM === undefined) {
  test.skip(`${title} [skipped: no Chromium (apt-get install chromium, or set CHROME_PATH)]`, () => {})
} else {
  test(title, async t => {
    t.timeout(240_000)
    const { default: puppeteer } = await import('puppeteer-core')
    const up = spawn(process.execPath, [bin, 'up', '--nodes', '3', '--spares', '1', '--steps', '240', '--kill-at', '80', '--dashboard'], {
      stdio: ['ignore', 'pipe', 'pipe']
    })
    const lines: string[] = []
    const url = new Promise<string>((resolve, reject) => {
      createInterface({ input: up.stdout }).on('line', l => {
        lines.push(l)
        const m = /^dashboard: (http:\/\/\S+)/.exec(l)
        if (m !== null) resolve(m[1]!)
      })
      up.on('exit', code => reject(new Error(`zeromesh up exited (${code}) before printing a dashboard URL:\n${lines.join('\n')}`)))
    })
    const exited = new Promise<number | null>(resolve => up.on('exit', code => resolve(code)))
    const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] })
    try {
      const page = await browser.newPage()
      const errors: string[] = []
      page.on('pageerror', e => errors.push(String(e)))
      await page.setViewport({ width: 1400, height: 1500 })
      const address = await url
      t.log(`dashboard at ${address}`)
      await page.goto(address)
      // (Page-side code as strings: this file is type-checked without the DOM's types.)
      const LOSS_POINTS = 'Number(document.body.dataset.lossPoints ?? 0)'
      const points = async (): Promise<number> => Number(await page.evaluate(LOSS_POINTS))
      await page.waitForFunction(`${LOSS_POINTS} >= 3`, { timeout: 90_000 })
      const first = await points()
      // The same page, no reload: the stream keeps adding points.
      await page.waitForFunction(`${LOSS_POINTS} > ${first}`, { timeout: 60_000 })
      t.true((await points()) > first, 'the loss curve gained points without a reload')
      t.true((await page.$$eval('#mesh .zone .member', els => els.length)) >= 3, 'the mesh view shows the members')
      mkdirSync(shots, { recursive: true })
      await page.screenshot({ path: join(shots, 'dashboard-running.png'), fullPage: true })
      // `up --kill-at 40` SIGKILLs a rank (never w0, whose page this is): the timeline shows the loss and the recovery.
      await page.waitForSelector('#timeline li[data-kind="recovery"]', { timeout: 120_000 })
      const timeline = await page.$$eval('#timeline li', els => els.map(e => e.textContent ?? ''))
      t.log(timeline.slice(0, 6).join('\n'))
      t.true(
        timeline.some(l => /lost\s/.test(l)),
        'the lost node is in the timeline'
      )
      const recovery = timeline.find(l => /recovery of rank/.test(l))
      t.regex(recovery ?? '', /\(\d+ ms\)/, 'the recovery shows how long it took')
      // After the recovery the view holds three live ranks again (the spare took the lost rank).
      try {
        await page.waitForFunction("document.querySelectorAll('#mesh .zone .member.role-rank').length === 3", { timeout: 60_000 })
        await page.waitForFunction("document.querySelectorAll('#placement tbody tr').length >= 1", { timeout: 60_000 })
      } finally {
        await page.screenshot({ path: join(shots, 'dashboard-after-kill.png'), fullPage: true })
      }
      t.log(`screenshots in ${shots}`)
      t.deepEqual(errors, [], 'no script errors on the page')
    } finally {
      await browser.close()
      up.kill('SIGTERM')
      await exited
    }
  })
}
