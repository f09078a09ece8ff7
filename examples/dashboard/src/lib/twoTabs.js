// This tab's side of the "two tabs" panel: its broker of the shared session (created on first
// use), an axios client through it, recorded for the timeline, and the link to the other tabs.
import { createTokenBroker } from 'token-broker';
import { createTabBroker, createTabLink } from '../../../shared/tabs.js';
import { createTimeline } from '../../../shared/timeline.js';
import { brokerAxios } from './clients.js';

let pending = null;

/** `{ broker, link }` for this tab; `role` is 'first' (the dashboard) or 'second' (?tab=second). */
export function twoTabs(role) {
  pending ??= (async () => {
    const timeline = createTimeline();
    const broker = await createTabBroker(createTokenBroker, timeline);
    const { get } = brokerAxios(broker, timeline);
    return { broker, link: createTabLink({ role, get, timeline }) };
  })();
  return pending;
}
