// Calls stats_v2 through Sentry's generated client (@sentry/api) and prints
// {"status": ..., "data": ..., "error": ...} as JSON. The one argument is a
// JSON object: {"baseUrl", "token", "organization", "query"}.
import { retrieveEventCountsForAnOrganizationV2 } from "@sentry/api";

const { baseUrl, token, organization, query } = JSON.parse(process.argv[2]);
const result = await retrieveEventCountsForAnOrganizationV2({
  baseUrl,
  auth: token,
  path: { organization_id_or_slug: organization },
  query,
});
process.stdout.write(
  JSON.stringify({
    status: result.response ? result.response.status : null,
    url: result.request ? result.request.url : null,
    data: result.data ?? null,
    error: result.error ?? null,
  }),
);
