import helmet from 'helmet';
import type { RequestHandler } from 'express';

/**
 * Standard security headers on every answer of port 3001 (helmet), with a Content Security Policy
 * that the overview page and Bull Board both work under: scripts and styles only from this server
 * (plus inline styles, which both pages set in markup), no plugins, no framing by any site, no
 * third-party requests. Bull Board links Google Fonts; the policy blocks that and its text falls
 * back to the browser's sans-serif, so an operator's browser talks to nothing but this server.
 *
 * Not sent: HSTS (port 3001 usually speaks plain HTTP; HTTPS is the terminating proxy's to
 * declare) and `upgrade-insecure-requests` (it would send the page's own requests to an https://
 * port that does not exist).
 */
export function securityHeaders(): RequestHandler {
  return helmet({
    contentSecurityPolicy: {
      useDefaults: false,
      directives: {
        defaultSrc: ["'self'"],
        baseUri: ["'self'"],
        connectSrc: ["'self'"],
        fontSrc: ["'self'", 'data:'],
        formAction: ["'self'"],
        frameAncestors: ["'none'"],
        imgSrc: ["'self'", 'data:'],
        objectSrc: ["'none'"],
        scriptSrc: ["'self'"],
        scriptSrcAttr: ["'none'"],
        styleSrc: ["'self'", "'unsafe-inline'"],
      },
    },
    strictTransportSecurity: false,
    xFrameOptions: { action: 'deny' },
  });
}
