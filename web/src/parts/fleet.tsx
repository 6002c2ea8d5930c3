// The live fleet's stream state, as a badge in the fleet pages' titles.
import { LiveBadge } from "./components";
import { fleet } from "../live";
import { useStore } from "../store";

/** The shared WatchWorkers stream's state (Live, Reconnecting…). */
export function LinkBadge() {
  return <LiveBadge state={useStore(fleet).state} />;
}
