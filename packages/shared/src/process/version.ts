import { readFileSync } from 'node:fs';

/**
 * The release this build is, as the workspace's package.json files give it (all of them carry the
 * root's version; a test holds them and the image label to it). Read from this package's own
 * package.json, which sits one level above both src/ and dist/, so sources and the compiled image
 * agree. `werkpilot --version`, `/api/metrics` (`version`) and `/metrics` (`werkpilot_build_info`)
 * all show this value.
 */
export const WERKPILOT_VERSION: string = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
