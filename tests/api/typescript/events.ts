// Types generated from openapi/openapi.json by openapi-typescript, used as a CRM would:
// a webhook handler narrows the published `Event` on `type` and reads a typed `data`.
import type { components, webhooks } from "./api";

type Event = components["schemas"]["Event"];
type WebhookBody = webhooks["event"]["post"]["requestBody"]["content"]["application/json"];

export function describe(body: WebhookBody): string {
  const event: Event = body;
  switch (event.type) {
    case "email.received": {
      const ids: number[] = event.data.email_ids;
      return `${ids.length} new in ${event.data.folder} (${event.data.folder_id})`;
    }
    case "email.updated":
      return event.data.emails
        .map((email) => {
          const uids: number[] = email.folders.map((place) => place.uid);
          return `${email.id} seen=${email.seen} flagged=${email.flagged} uids=${uids.join(",")}`;
        })
        .join("; ");
    case "email.deleted":
      return `${event.data.email_ids.length} deleted`;
    case "mailbox.synced": {
      // @ts-expect-error a sync's data holds counts, not email ids
      void event.data.email_ids;
      const complete: boolean = event.data.complete;
      return `run ${event.data.run_id}: ${event.data.new} new, complete=${complete}`;
    }
    case "mailbox.sync_failed":
      return event.data.error_code;
    case "mailbox.credentials_invalid":
      return `${event.data.error_code}: ${event.data.message}`;
    case "mailbox.credentials_restored":
      return `mailbox ${event.mailbox_id ?? "deleted"} of ${event.owner ?? "the system"} is back`;
    case "mailbox.connection_failing": {
      const fix: string | null | undefined = event.data.reconnect_url;
      return `${event.data.error_code} since ${event.data.failing_since}; fix at ${fix ?? "-"}`;
    }
    case "mailbox.connection_restored":
      return `working again after failing since ${event.data.failing_since}`;
    case "folder.deleted":
      return `${event.data.full_name} kept=${event.data.kept}`;
    case "folder.renamed":
      return `${event.data.old_name} -> ${event.data.new_name}`;
    case "folder.reset":
      return `${event.data.full_name}: ${event.data.old_uidvalidity} -> ${event.data.new_uidvalidity}`;
    case "webhook.test":
      return `test of endpoint ${event.data.endpoint_id} at ${event.data.url}`;
    default: {
      const unhandled: never = event; // the union is closed: every type is handled above
      return unhandled;
    }
  }
}
