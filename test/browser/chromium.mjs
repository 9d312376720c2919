// Debian's Chromium (/usr/bin/chromium, never a downloaded build) under
// playwright-core, as the scripts here launch it.  Running as root in a
// container it needs --no-sandbox; without the background-networking flags
// it tries to reach Google's services, which this network refuses.
import { chromium } from 'playwright-core';

export const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
  '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
];

// The browser, with FLAGS and the extra flags given; environment
// CHROMIUM names another binary.
export function launch(extraFlags = []) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [...FLAGS, ...extraFlags],
    timeout: 60000,
  });
}
